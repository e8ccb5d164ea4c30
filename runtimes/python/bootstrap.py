"""Lambent's managed Python runtime bootstrap.

The worker runs `python3 <dir>/python/bootstrap.py` with cwd = the function's code.
It loads the handler named by _HANDLER once, then serves invocations from the Lambda
Runtime API (2018-06-01) at AWS_LAMBDA_RUNTIME_API one at a time, with the context
object, error payloads and log format of AWS's Python runtimes.
"""

import importlib
import json
import logging
import os
import site
import socket
import sys
import time
import traceback

API_PREFIX = "/2018-06-01/runtime"
API_ATTEMPTS = 3  # per Runtime API request; a dropped keep-alive connection is reopened
TRACE_ENV = "_X_AMZN_TRACE_ID"
LOG_LEVELS = {"TRACE": "DEBUG", "DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARNING",
              "WARNING": "WARNING", "ERROR": "ERROR", "FATAL": "CRITICAL", "CRITICAL": "CRITICAL"}

_request_id = ""  # id of the current invocation, stamped on log records


class Fault(Exception):
    """A failure the runtime itself reports, with an AWS `Runtime.*` error type."""

    def __init__(self, error_type, message, stack_trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace or []


class RuntimeApiError(Exception):
    """The Runtime API is unreachable or refused to hand out work: the runtime must exit."""


class RuntimeApi:
    """Client for the Runtime API over one keep-alive HTTP/1.1 connection.

    A minimal HTTP/1.1 client on a plain socket: http.client would add ~20 ms of imports
    (email, ssl) to every cold start. Header names are returned lower-cased.
    """

    def __init__(self, address):
        host, _, port = address.rpartition(":")  # "host:port", no scheme
        self._address = (host.strip("[]"), int(port))
        self._host = address
        self._sock = None
        self._reader = None

    def _connect(self):
        self._sock = socket.create_connection(self._address)  # no timeout: /next long-polls
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._sock.makefile("rb")

    def _close(self):
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
            self._sock = self._reader = None

    def _request(self, method, path, body=b"", headers=()):
        head = f"{method} {API_PREFIX}{path} HTTP/1.1\r\nHost: {self._host}\r\n"
        if method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        message = head.encode("latin-1") + body
        for attempt in range(API_ATTEMPTS):
            try:
                if self._sock is None:
                    self._connect()
                self._sock.sendall(message)
                return self._read_response()
            except (OSError, ValueError) as e:  # reset, refused, or a malformed/truncated reply
                self._close()
                if attempt == API_ATTEMPTS - 1:
                    raise RuntimeApiError(f"{method} {path} failed: {e!r}") from None
                time.sleep(0.01 * (attempt + 1))

    def _read_line(self):
        line = self._reader.readline(65537)
        if not line.endswith(b"\n"):
            raise ConnectionError("connection closed mid-response")
        return line

    def _read_exact(self, size):
        data = self._reader.read(size)
        if len(data) != size:
            raise ConnectionError("connection closed mid-response")
        return data

    def _read_response(self):
        _version, status, *_reason = self._read_line().split(None, 2)
        headers = {}
        while (line := self._read_line()) not in (b"\r\n", b"\n"):
            name, _, value = line.decode("utf-8", "replace").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self._read_line().split(b";")[0], 16):
                chunks.append(self._read_exact(size))
                self._read_line()
            while self._read_line() not in (b"\r\n", b"\n"):  # trailers
                pass
            body = b"".join(chunks)
        else:
            body = self._read_exact(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self._close()
        return int(status), headers, body

    def next_invocation(self):
        status, headers, body = self._request("GET", "/invocation/next")
        if status != 200:
            raise RuntimeApiError(f"GET /invocation/next returned HTTP {status}: {body[:200]!r}")
        return headers, body

    def post_response(self, request_id, payload, content_type):
        self._post(f"/invocation/{request_id}/response", payload, [("Content-Type", content_type)])

    def post_invocation_error(self, request_id, error):
        self._post_error(f"/invocation/{request_id}/error", error)

    def post_init_error(self, error):
        self._post_error("/init/error", error)

    def _post_error(self, path, error):
        error_type = "".join(c if " " <= c <= "~" else "?" for c in error["errorType"])
        headers = [("Content-Type", "application/json"), ("Lambda-Runtime-Function-Error-Type", error_type)]
        self._post(path, json.dumps(error).encode(), headers)

    def _post(self, path, body, headers):
        status, _, reply = self._request("POST", path, body, headers)
        if status != 202:
            sys.__stderr__.write(f"[WARNING] Runtime API rejected POST {path}: HTTP {status} {reply[:200]!r}\n")


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, identity):
        self.cognito_identity_id = identity.get("cognitoIdentityId")
        self.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, client):
        for field in self.__slots__:
            setattr(self, field, client.get(field))


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, context):
        client = context.get("client")
        self.client = Client(client) if client is not None else None
        self.custom = context.get("custom")
        self.env = context.get("env")


class LambdaContext:
    """The `context` argument of a handler, as AWS's Python runtime builds it."""

    def __init__(self, request_id, headers):
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn")
        self.memory_limit_in_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0)
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.tenant_id = headers.get("lambda-runtime-aws-tenant-id")
        client_context = _json_header(headers, "lambda-runtime-client-context", "Client Context")
        self.client_context = ClientContext(client_context) if client_context is not None else None
        self.identity = CognitoIdentity(
            _json_header(headers, "lambda-runtime-cognito-identity", "Cognito Identity") or {})
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms") or 0)

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, msg):
        sys.stdout.write(str(msg))


def _json_header(headers, name, label):
    value = headers.get(name)
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError as e:
        raise Fault("Runtime.LambdaContextUnmarshalError", f"Unable to parse {label} JSON: {e}") from None


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _request_id
        return True


def setup_logging():
    handler = logging.StreamHandler(sys.__stdout__)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = LOG_LEVELS.get(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper())
    if level:
        root.setLevel(level)


def setup_sys_path():
    """Code first, then layers, as on AWS; .pth files in those directories are honoured."""
    script_dir = os.path.dirname(os.path.abspath(__file__))
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    layer_site = "/opt/python/lib/python{}.{}/site-packages".format(*sys.version_info[:2])
    wanted = [task_root, layer_site, "/opt/python"]
    sys.path[:] = wanted + [p for p in sys.path if p not in wanted and p != script_dir]
    for directory in wanted:
        if os.path.isdir(directory):
            site.addsitedir(directory)


def load_handler(spec):
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise Fault("Runtime.MalformedHandlerName",
                    f"Bad handler '{spec}': not enough values to unpack (expected 2, got 1)")
    if not function_name or module_name.startswith((".", "/")):
        raise Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}': expected 'module.function'")
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise Fault("Runtime.BuiltInModuleConflict", f"Cannot use built-in module {module_name} as a handler module")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as e:
        raise Fault("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}") from None
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise Fault("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {e}", trace) from None
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise Fault("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'") from None


def error_payload(exc, request_id):
    """The JSON error body AWS's Python runtime posts for an exception."""
    if isinstance(exc, Fault):
        message, error_type, stack_trace = exc.message, exc.error_type, exc.stack_trace
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename not in (__file__, importlib.__file__) and not f.filename.startswith("<frozen importlib")]
        try:
            message = str(exc)
        except Exception:
            message = f"<unprintable {type(exc).__name__} object>"
        error_type, stack_trace = type(exc).__name__, traceback.format_list(frames)
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": stack_trace}


def log_error(error):
    """Print an error like AWS does on stdout: one record, lines joined by CR, NBSP indents."""
    summary = f"[ERROR] {error['errorType']}" + (f": {error['errorMessage']}" if error["errorMessage"] else "")
    lines = [summary, "Traceback (most recent call last):"]
    for entry in error["stackTrace"]:
        for line in entry.splitlines():
            stripped = line.lstrip(" ")
            lines.append("\u00a0" * (len(line) - len(stripped)) + stripped)
    text = "\r".join(lines) + "\n"
    sys.__stdout__.write(text.encode("utf-8", "backslashreplace").decode())
    sys.__stdout__.flush()


def _json_default(value):
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def marshal(result):
    if isinstance(result, bytes):
        return result, "application/unknown"
    try:
        return json.dumps(result, ensure_ascii=False, default=_json_default).encode(), "application/json"
    except (TypeError, ValueError) as e:
        raise Fault("Runtime.MarshalError", f"Unable to marshal response: {e}") from None


def flush_output():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def handle_invocation(api, handler, headers, body):
    global _request_id
    request_id = headers.get("lambda-runtime-aws-request-id", "")
    _request_id = request_id
    trace_id = headers.get("lambda-runtime-trace-id")
    if trace_id:
        os.environ[TRACE_ENV] = trace_id
    else:
        os.environ.pop(TRACE_ENV, None)
    try:
        context = LambdaContext(request_id, headers)
        try:
            event = json.loads(body)
        except ValueError as e:
            raise Fault("Runtime.UnmarshalError", f"Unable to unmarshal input: {e}") from None
        payload, content_type = marshal(handler(event, context))
    except Exception as e:
        error = error_payload(e, request_id)
        log_error(error)
        flush_output()
        api.post_invocation_error(request_id, error)
    else:
        flush_output()
        api.post_response(request_id, payload, content_type)


def main():
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    api = RuntimeApi(os.environ["AWS_LAMBDA_RUNTIME_API"])
    setup_logging()
    try:
        setup_sys_path()
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except Exception as e:
        error = error_payload(e, "")
        log_error(error)
        flush_output()
        api.post_init_error(error)
        sys.exit(1)
    while True:
        headers, body = api.next_invocation()
        handle_invocation(api, handler, headers, body)


if __name__ == "__main__":
    try:
        main()
    except RuntimeApiError as e:
        sys.__stderr__.write(f"[ERROR] Runtime API: {e}\n")
        sys.exit(1)
