import apphelpers


def handler(event, context):
    numbers = (event or {}).get("numbers", [])
    return apphelpers.envelope("calculator", context, sum(numbers))
