// Trivial echo function for the Node 20 runtime, the counterpart of
// tests/functions/echo-rs: `{"sleep_ms": N}` sleeps first, `{"fail": true}`
// fails, `{"quiet": true}` answers without echoing the event.
"use strict";

exports.echo = async (event, context) => {
  if (event && event.sleep_ms) {
    await new Promise((resolve) => setTimeout(resolve, event.sleep_ms));
  }
  if (event && event.fail === true) {
    throw new Error(`echo-node failed on purpose (request ${context.awsRequestId})`);
  }
  if (event && event.quiet === true) {
    return { ok: true, request_id: context.awsRequestId };
  }
  return {
    echo: event,
    request_id: context.awsRequestId,
    function_arn: context.invokedFunctionArn,
    memory: Number(context.memoryLimitInMB),
    pid: process.pid,
  };
};
