// Reads one of Echo's live AI streams with the Vercel AI SDK's own parsers and prints what a
// `useChat` client would assemble, as one JSON line. Used by tests/ai_sdk.rs.
//
//   node read-stream.mjs ui        <url> <token> <body-json>   parseJsonEventStream + readUIMessageStream
//   node read-stream.mjs ui-chat   <api> <token> <chat-id> <text>  AI SDK 5 DefaultChatTransport (useChat's)
//   node read-stream.mjs ui-resume <api> <token> <chat-id>     DefaultChatTransport.reconnectToStream
//   node read-stream.mjs data      <url> <token> <body-json>   AI SDK 4 processDataStream
//
// Exit codes: 0 parsed, 2 HTTP error, 3 the parser rejected the stream.

import {
  DefaultChatTransport,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} from 'ai';
import { processDataStream } from 'ai-v4';

const [mode, url, token, ...rest] = process.argv.slice(2);
const auth = { authorization: `Bearer ${token}` };

function fail(code, message) {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

async function post(body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body,
  });
  if (!res.ok) fail(2, `HTTP ${res.status}: ${await res.text()}`);
  return res;
}

/** Runs the UI message chunks through readUIMessageStream; the last snapshot is the message. */
async function assemble(chunks) {
  let last;
  const errors = [];
  for await (const message of readUIMessageStream({
    stream: chunks,
    onError: (e) => errors.push(String(e?.message ?? e)),
  })) {
    last = message;
  }
  const parts = last?.parts ?? [];
  return {
    messageId: last?.id ?? null,
    text: parts.filter((p) => p.type === 'text').map((p) => p.text).join(''),
    textStates: parts.filter((p) => p.type === 'text').map((p) => p.state),
    partTypes: parts.map((p) => p.type),
    errors,
  };
}

/** Validated chunks, as DefaultChatTransport makes them: a chunk the schema rejects throws. */
function validated(stream) {
  return parseJsonEventStream({ stream, schema: uiMessageChunkSchema }).pipeThrough(
    new TransformStream({
      transform(part, controller) {
        if (!part.success) throw part.error;
        controller.enqueue(part.value);
      },
    }),
  );
}

function transport() {
  return new DefaultChatTransport({ api: url, headers: auth });
}

async function main() {
  switch (mode) {
    case 'ui': {
      const res = await post(rest[0]);
      return assemble(validated(res.body));
    }
    case 'ui-chat': {
      const [chatId, text] = rest;
      const chunks = await transport().sendMessages({
        chatId,
        trigger: 'submit-message',
        messageId: undefined,
        abortSignal: undefined,
        messages: [{ id: `user-${Date.now()}`, role: 'user', parts: [{ type: 'text', text }] }],
      });
      return assemble(chunks);
    }
    case 'ui-resume': {
      const chunks = await transport().reconnectToStream({ chatId: rest[0] });
      if (chunks == null) return { resumed: false };
      return { resumed: true, ...(await assemble(chunks)) };
    }
    case 'data': {
      const res = await post(rest[0]);
      const out = { text: '', messageId: null, finishReason: null, usage: null, errors: [] };
      await processDataStream({
        stream: res.body,
        onStartStepPart: (v) => {
          out.messageId = v.messageId;
        },
        onTextPart: (t) => {
          out.text += t;
        },
        onErrorPart: (e) => {
          out.errors.push(e);
        },
        onFinishStepPart: (v) => {
          out.stepFinishReason = v.finishReason;
          out.isContinued = v.isContinued;
        },
        onFinishMessagePart: (v) => {
          out.finishReason = v.finishReason;
          out.usage = v.usage;
        },
      });
      return out;
    }
    default:
      fail(64, `unknown mode ${mode}`);
  }
}

try {
  process.stdout.write(`${JSON.stringify(await main())}\n`);
} catch (e) {
  fail(3, `the AI SDK rejected the stream: ${e?.stack ?? e}`);
}
