// Lambent's managed Node.js runtime bootstrap.
//
// The worker runs `node <dir>/node/bootstrap.mjs` with cwd = the function's code. It loads the
// handler named by _HANDLER once, then serves invocations from the Lambda Runtime API
// (2018-06-01) at AWS_LAMBDA_RUNTIME_API one at a time, with the context object, callback and
// promise semantics, error payloads and console format of AWS's Node.js runtimes.

import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import util from 'node:util';

const API_PREFIX = '/2018-06-01/runtime';
const API_ATTEMPTS = 3; // per Runtime API request; a dropped keep-alive connection is reopened
const require = createRequire(import.meta.url);

let requestId; // current invocation id for console lines ("undefined" during init, as on AWS)
let current = null; // the invocation being handled: { id, done, posting }
let onBeforeExit = null; // run once when the event loop drains (callbackWaitsForEmptyEventLoop)
let initialized = false;
let crashing = false;

class RuntimeApiError extends Error {}

// Response streaming, as AWS's Node runtime offers it through the global `awslambda`.
const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HIGH_WATER_MARK = Symbol.for('aws.lambda.runtime.handler.streaming.highWaterMark');
const HTTP_INTEGRATION_TYPE = 'application/vnd.awslambda.http-integration-response';

class HttpResponseStream {
  // Marks the stream as an HTTP integration response: a JSON prelude (statusCode, headers,
  // cookies), eight NUL bytes, then the body (function URLs in RESPONSE_STREAM mode).
  static from(underlyingStream, prelude) {
    underlyingStream.setContentType(HTTP_INTEGRATION_TYPE);
    underlyingStream.write(JSON.stringify(prelude ?? {}));
    underlyingStream.write(new Uint8Array(8));
    return underlyingStream;
  }
}

globalThis.awslambda = {
  streamifyResponse(handler, options) {
    handler[STREAMING] = 'response';
    if (options?.highWaterMark !== undefined) handler[HIGH_WATER_MARK] = Number(options.highWaterMark);
    return handler;
  },
  HttpResponseStream,
};

// One keep-alive HTTP/1.1 connection to the Runtime API.
class RuntimeApi {
  constructor(address) {
    const colon = address.lastIndexOf(':');
    this.host = address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
    this.port = Number(address.slice(colon + 1));
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  async request(method, apiPath, body, headers = {}) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.send(method, apiPath, body, headers);
      } catch (err) {
        if (attempt >= API_ATTEMPTS) throw new RuntimeApiError(`${method} ${apiPath} failed: ${err.message}`);
        await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
      }
    }
  }

  send(method, apiPath, body, headers) {
    return new Promise((resolve, reject) => {
      if (body !== undefined) headers = { ...headers, 'Content-Length': Buffer.byteLength(body) };
      const options = { host: this.host, port: this.port, agent: this.agent, method, path: API_PREFIX + apiPath, headers };
      const req = http.request(options, (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
        res.on('close', () => res.complete || reject(new Error('connection closed mid-response')));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  async next() {
    const res = await this.request('GET', '/invocation/next');
    if (res.status !== 200) throw new RuntimeApiError(`GET /invocation/next returned HTTP ${res.status}: ${res.body.slice(0, 200)}`);
    return res;
  }

  postResponse(id, body) {
    return this.post(`/invocation/${id}/response`, body, { 'Content-Type': 'application/json' });
  }

  postError(apiPath, error) {
    const headers = {
      'Content-Type': 'application/json',
      'Lambda-Runtime-Function-Error-Type': error.errorType.replace(/[^\x20-\x7e]/g, '?'),
    };
    return this.post(apiPath, JSON.stringify(error), headers);
  }

  async post(apiPath, body, headers) {
    const res = await this.request('POST', apiPath, body, headers);
    if (res.status !== 202) process.stderr.write(`[WARNING] Runtime API rejected POST ${apiPath}: HTTP ${res.status} ${res.body.slice(0, 200)}\n`);
  }
}

const api = new RuntimeApi(process.env.AWS_LAMBDA_RUNTIME_API);
// Streamed responses get their own connection, so an /error posted while one is open (a crash
// mid-stream) does not queue behind it.
const streamAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// The writable `responseStream` a streamified handler gets: its chunks are POSTed to
// /response in streaming mode (chunked encoding) as they are written; an error after the
// stream has begun goes in the Lambda-Runtime-Function-Error-* trailers.
function responseStream(id, highWaterMark) {
  let contentType = 'application/octet-stream';
  let req = null;
  let failure = null; // the error document to send in the trailers
  let answered;
  const open = () => {
    if (req) return;
    req = http.request({
      host: api.host,
      port: api.port,
      agent: streamAgent,
      method: 'POST',
      path: `${API_PREFIX}/invocation/${id}/response`,
      headers: {
        'Content-Type': contentType,
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        'Transfer-Encoding': 'chunked',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
      },
    });
    answered = new Promise((resolve) => {
      req.on('response', (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => resolve({ status: 0, body: err.message }));
      });
      req.on('error', (err) => resolve({ status: 0, body: err.message }));
    });
    req.flushHeaders();
  };
  const stream = new Writable({
    highWaterMark,
    write(chunk, _encoding, callback) {
      open();
      if (req.destroyed) return callback();
      req.write(chunk, () => callback());
    },
    final(callback) {
      open();
      if (failure) {
        req.addTrailers({
          'Lambda-Runtime-Function-Error-Type': failure.errorType.replace(/[^\x20-\x7e]/g, '?'),
          'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(failure)).toString('base64'),
        });
      }
      req.end(() => callback());
    },
  });
  stream.on('error', () => {}); // a refused or cut stream is reported by the Runtime API's answer
  stream.setContentType = (type) => {
    if (req) throw new Error('Content type cannot be set after the first write');
    contentType = String(type);
  };
  // Ends the stream (with the error in the trailers, if any) and waits for the Runtime API.
  stream.complete = async (err) => {
    if (err !== undefined) {
      console.error('Invoke Error', formatForLog(err));
      failure = errorResponse(err);
    }
    if (!stream.writableEnded) stream.end();
    await new Promise((resolve) => {
      if (stream.writableFinished || stream.destroyed) resolve();
      else {
        stream.once('finish', resolve);
        stream.once('close', resolve);
      }
    });
    open();
    const res = await answered;
    if (res.status !== 202) process.stderr.write(`[WARNING] Runtime API rejected the streamed response: HTTP ${res.status} ${res.body.slice(0, 200)}\n`);
  };
  return stream;
}

// Node queues writes to a full pipe in memory; blocking stdio makes every write land before the
// response is posted (and keeps a chatty handler from buffering its whole output).
for (const stream of [process.stdout, process.stderr]) stream._handle?.setBlocking?.(true);

// console.* → `<ISO time>\t<request id>\t<LEVEL>\t<message>` on stdout, one line per call.
const LEVELS = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO', log: 'INFO', warn: 'WARN', error: 'ERROR', fatal: 'FATAL' };
for (const [method, level] of Object.entries(LEVELS)) {
  console[method] = (...args) => {
    const line = `${new Date().toISOString()}\t${requestId}\t${level}\t${util.format(...args)}`;
    process.stdout.write(`${line.replace(/\n/g, '\r')}\n`);
  };
}

function isError(value) {
  return util.types.isNativeError(value) || value instanceof Error
    || (value !== null && typeof value === 'object' && typeof value.name === 'string'
      && typeof value.message === 'string' && typeof value.stack === 'string');
}

// Text for a thrown value that is not an Error.
function describe(value) {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && !isError(value)) {
    try {
      const json = JSON.stringify(value);
      if (json !== undefined) return json;
    } catch { /* fall through to String() */ }
  }
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

// The body AWS's Node runtime posts to /error.
function errorResponse(err) {
  try {
    if (isError(err)) {
      return { errorType: String(err.name), errorMessage: String(err.message), trace: typeof err.stack === 'string' ? err.stack.split('\n') : [] };
    }
    return { errorType: err === null ? 'object' : typeof err, errorMessage: describe(err), trace: [] };
  } catch {
    return { errorType: 'handled', errorMessage: 'error value could not be read (its name, message or stack threw)', trace: [] };
  }
}

// The JSON AWS's Node runtime logs after "Invoke Error" / "Uncaught Exception".
function formatForLog(err) {
  try {
    return `\t${JSON.stringify(err, (_key, value) => (isError(value)
      ? { errorType: value.name, errorMessage: value.message, code: value.code, ...value, stack: value.stack?.split('\n') }
      : value))}`;
  } catch {
    return `\t${JSON.stringify(errorResponse(err))}`;
  }
}

// A `Runtime.*` error; with a cause, its stack carries the cause's frames (where the user's code failed).
function runtimeError(type, message, cause) {
  const err = new Error(message);
  Object.defineProperty(err, 'name', { value: type }); // non-enumerable, like a class's name
  let frames = err.stack.split('\n').slice(1).join('\n');
  if (typeof cause?.stack === 'string') {
    const head = `${String(cause)}\n`;
    frames = cause.stack.startsWith(head) ? cause.stack.slice(head.length) : cause.stack;
  }
  err.stack = `${type}: ${message}\n${frames}`;
  return err;
}

// Handler loading, resolved the way AWS's Node runtime does it.

function isEsmPackage(dir) {
  if (dir.endsWith('/node_modules')) return false;
  const manifest = path.join(dir, 'package.json');
  if (fs.existsSync(manifest)) {
    try {
      return JSON.parse(fs.readFileSync(manifest, 'utf8'))?.type === 'module';
    } catch (err) {
      console.warn(`${manifest} cannot be read, it will be ignored for ES module detection purposes.`, err);
      return false;
    }
  }
  const parent = path.dirname(dir);
  return parent !== dir && isEsmPackage(parent);
}

async function importModule(file) {
  return import(pathToFileURL(file).href);
}

async function loadModule(taskRoot, moduleRoot, name) {
  const base = path.resolve(taskRoot, moduleRoot, name);
  try {
    if (fs.existsSync(base)) return require(base);
    if (fs.existsSync(`${base}.js`)) return isEsmPackage(path.dirname(base)) ? await importModule(`${base}.js`) : require(`${base}.js`);
    if (fs.existsSync(`${base}.mjs`)) return await importModule(`${base}.mjs`);
    if (fs.existsSync(`${base}.cjs`)) return require(`${base}.cjs`);
    return require(require.resolve(name, { paths: [taskRoot, path.resolve(taskRoot, moduleRoot)] }));
  } catch (err) {
    if (err instanceof SyntaxError) throw runtimeError('Runtime.UserCodeSyntaxError', String(err), err);
    if (err?.code === 'MODULE_NOT_FOUND' || err?.code === 'ERR_MODULE_NOT_FOUND') {
      throw runtimeError('Runtime.ImportModuleError', String(err), err);
    }
    throw err;
  }
}

async function loadHandler(taskRoot, spec) {
  if (spec.includes('..')) {
    throw runtimeError('Runtime.MalformedHandlerName',
      `'${spec}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`);
  }
  const moduleAndHandler = path.basename(spec);
  const moduleRoot = spec.slice(0, spec.length - moduleAndHandler.length);
  const match = /^([^.]*)\.(.*)$/.exec(moduleAndHandler);
  if (!match) throw runtimeError('Runtime.MalformedHandlerName', 'Bad handler');
  const app = await loadModule(taskRoot, moduleRoot, match[1]);
  const handler = match[2].split('.').reduce((object, key) => object && object[key], app);
  if (!handler) throw runtimeError('Runtime.HandlerNotFound', `${spec} is undefined or not exported`);
  if (typeof handler !== 'function') throw runtimeError('Runtime.HandlerNotFound', `${spec} is not a function`);
  return handler;
}

// Invocations.

async function postResult(id, result) {
  let body;
  try {
    body = JSON.stringify(result === undefined ? null : result);
  } catch (err) {
    return postFailure(id, runtimeError('Runtime.MarshalError', `Unable to stringify response body: ${err.message}`));
  }
  return api.postResponse(id, body ?? 'null');
}

async function postFailure(id, err) {
  console.error('Invoke Error', formatForLog(err));
  return api.postError(`/invocation/${id}/error`, errorResponse(err));
}

function buildContext(headers, invocation, finish) {
  let waitForEmptyEventLoop = true;
  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  const env = process.env;
  const done = (err, result) => (err !== undefined && err !== null
    ? finish(() => postFailure(invocation.id, err))
    : finish(() => postResult(invocation.id, result)));
  const callback = (err, result) => {
    if ((err !== undefined && err !== null) || !waitForEmptyEventLoop) return done(err, result);
    onBeforeExit = () => setImmediate(() => done(null, result));
  };
  const context = {
    get callbackWaitsForEmptyEventLoop() { return waitForEmptyEventLoop; },
    set callbackWaitsForEmptyEventLoop(value) { waitForEmptyEventLoop = value; },
    succeed: (result) => done(null, result),
    fail: (err) => done(err ?? 'handled'),
    done,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
    identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: invocation.id,
    tenantId: headers['lambda-runtime-aws-tenant-id'],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
  return { context, callback };
}

function parseJsonHeader(value, name) {
  if (!value) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err}`);
  }
}

// A streamified handler: handler(event, responseStream, context); the stream ends when the
// handler's promise settles (with the error in the trailers if it rejects).
function handleStreamingInvocation(handler, headers, body, invocation, finish) {
  const stream = responseStream(invocation.id, handler[HIGH_WATER_MARK]);
  onBeforeExit = () => finish(() => stream.complete());
  let result;
  try {
    const { context } = buildContext(headers, invocation, finish);
    result = handler(JSON.parse(body), stream, context);
  } catch (err) {
    result = Promise.reject(err);
  }
  Promise.resolve(result).then(() => finish(() => stream.complete()), (err) => finish(() => stream.complete(err ?? 'handled')));
}

function handleInvocation(handler, headers, body) {
  const invocation = { id: headers['lambda-runtime-aws-request-id'], done: false, posting: null };
  current = invocation;
  requestId = invocation.id;
  if (headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
  else delete process.env._X_AMZN_TRACE_ID;

  const finish = (post) => {
    if (invocation.done) {
      console.error('Invocation has already been reported as done. Cannot call complete more than once per invocation.');
      return;
    }
    invocation.done = true;
    onBeforeExit = null;
    invocation.posting = post().then(serveNext, exitRuntime);
  };
  if (handler[STREAMING] === 'response') {
    handleStreamingInvocation(handler, headers, body, invocation, finish);
    return;
  }
  // A handler that neither returns a promise nor calls back answers null once the event loop drains.
  onBeforeExit = () => finish(() => postResult(invocation.id, null));
  try {
    const { context, callback } = buildContext(headers, invocation, finish);
    const result = handler(JSON.parse(body), context, callback);
    if (result && typeof result.then === 'function') {
      result.then((value) => finish(() => postResult(invocation.id, value)), (err) => finish(() => postFailure(invocation.id, err)));
    }
  } catch (err) {
    finish(() => postFailure(invocation.id, err));
  }
}

let userHandler;

function serveNext() {
  setImmediate(async () => {
    try {
      const { headers, body } = await api.next();
      handleInvocation(userHandler, headers, body);
    } catch (err) {
      exitRuntime(err);
    }
  });
}

function exitRuntime(err) {
  process.stderr.write(`[ERROR] Runtime API: ${err.message}\n`);
  process.exit(1);
}

// An error nobody caught: report it for the invocation in flight (or init), then exit as AWS does.
async function crash(err, exitCode) {
  if (crashing) return;
  crashing = true;
  try {
    if (!initialized) await api.postError('/init/error', errorResponse(err));
    else if (current && !current.done) {
      current.done = true;
      await api.postError(`/invocation/${current.id}/error`, errorResponse(err));
    } else if (current?.posting) await current.posting;
  } finally {
    process.exit(exitCode);
  }
}

process.on('uncaughtException', (err) => {
  console.error('Uncaught Exception', formatForLog(err));
  crash(err, 129);
});

process.on('unhandledRejection', (reason) => {
  const err = runtimeError('Runtime.UnhandledPromiseRejection', describe(reason), reason);
  console.error('Unhandled Promise Rejection', formatForLog(err));
  crash(err, 128);
});

process.on('beforeExit', () => {
  const action = onBeforeExit;
  onBeforeExit = null;
  action?.();
});

try {
  userHandler = await loadHandler(process.env.LAMBDA_TASK_ROOT || process.cwd(), process.env._HANDLER ?? '');
} catch (err) {
  console.error('Uncaught Exception', formatForLog(err));
  await crash(err, 1);
}
initialized = true;
serveNext();
