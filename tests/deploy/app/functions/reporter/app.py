import os

import apphelpers


def handler(event, context):
    report = {
        "function_name": context.function_name,
        "memory_mb": int(context.memory_limit_in_mb),
        "stage": os.environ.get("APP_STAGE", ""),
    }
    return apphelpers.envelope("reporter", context, report)
