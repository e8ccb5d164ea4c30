import apphelpers


def handler(event, context):
    name = (event or {}).get("name", "world")
    return apphelpers.envelope("greeter", context, apphelpers.greet(name))
