"""Shared helpers for the demo application (shipped as a Lambda layer)."""

HELPER_VERSION = "1.0"


def greet(name):
    return "Hello, %s!" % name


def envelope(function, context, result):
    """The response shape every function of the app returns."""
    return {
        "function": function,
        "version": context.function_version,
        "invoked_arn": context.invoked_function_arn,
        "helper": HELPER_VERSION,
        "result": result,
    }
