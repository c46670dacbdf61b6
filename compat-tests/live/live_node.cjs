// The compat catalogue through the official OpenAI Node SDK against a real gateway and node.
// For each call it asserts what the SDK hands the caller. Run by compat-tests (tests/compat/live.rs).
const assert = require("node:assert/strict");
const OpenAI = require("openai");
const { VERSION } = require("openai/version");

const env = process.env;
const MODEL = "gpt-4o-mini";
const SLASHED = "org/llama3.1:8b"; // the node serves it too: an id with `/` and `:`
const HI = [{ role: "user", content: "Hello!" }];
const TOOLS = [{ type: "function", function: { name: "lookup", description: "Look a word up",
  parameters: { type: "object", properties: { query: { type: "string" } }, required: ["query"] } } }];

async function rejects(promise, Class, status) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof Class, `${error.constructor.name} is not ${Class.name}`);
    assert.equal(error.status, status);
    return error;
  }
  throw new Error(`expected ${Class.name}`);
}

// Calls `call` until `done(result)`, as an SDK user polls, failing past the deadline.
async function until(call, done, deadlineMs = 60_000) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const result = await call();
    if (done(result)) return result;
    assert.ok(Date.now() < deadline, `still ${JSON.stringify(result)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function ids(page) {
  const found = [];
  for await (const item of page) found.push(item.id);
  return found;
}

async function main() {
  const base = `${env.OBB_BASE_URL}/v1`;
  const waited = new OpenAI({ baseURL: base, apiKey: env.OBB_USER_KEY, defaultQuery: { wait: "30" } });
  const prefer = new OpenAI({ baseURL: base, apiKey: env.OBB_USER_KEY, defaultHeaders: { Prefer: "wait=30" } });
  const chat = (extra = {}, options) => waited.chat.completions.create({ model: MODEL, messages: HI, ...extra }, options);

  assert.equal((await chat()).choices[0].message.content, "mock: Hello!");
  const turns = [{ role: "system", content: "You are terse." }, { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello." }, { role: "user", content: "And again?" }];
  assert.equal((await chat({ messages: turns })).choices[0].message.content, "mock: And again?");

  const called = await chat({ messages: [{ role: "user", content: "What is a queue?" }], tools: TOOLS,
    tool_choice: { type: "function", function: { name: "lookup" } } });
  const call = called.choices[0].message.tool_calls[0];
  assert.equal(called.choices[0].finish_reason, "tool_calls");
  assert.deepEqual(JSON.parse(call.function.arguments), { query: "What is a queue?" });
  const followup = await chat({ tools: TOOLS, messages: [{ role: "user", content: "What is a queue?" },
    called.choices[0].message, { role: "tool", tool_call_id: call.id, content: "a line of waiting things" }] });
  assert.ok(followup.choices[0].message.content.includes("a line of waiting things"));

  const schema = { type: "json_schema", json_schema: { name: "answer", strict: true, schema: { type: "object",
    properties: { answer: { type: "string" }, confidence: { type: "number" } },
    required: ["answer", "confidence"], additionalProperties: false } } };
  assert.equal(JSON.parse((await chat({ response_format: schema })).choices[0].message.content).answer, "mock: Hello!");
  assert.equal((await chat({ n: 2 })).choices.length, 2);
  const sampled = await chat({ seed: 42, temperature: 0.3, max_completion_tokens: 64 });
  assert.equal(sampled.usage.total_tokens, sampled.usage.prompt_tokens + sampled.usage.completion_tokens);

  // A stream is the upstream's own, relayed live: the mock streams `t0 t1 t2 `.
  const STREAMED = "t0 t1 t2 ";
  let streamed = "";
  for await (const chunk of await chat({ stream: true })) {
    assert.equal(chunk.object, "chat.completion.chunk");
    streamed += chunk.choices[0]?.delta?.content || "";
  }
  assert.equal(streamed, STREAMED);

  assert.equal((await prefer.chat.completions.create({ model: MODEL, messages: HI })).choices[0].message.content, "mock: Hello!");
  const key = { headers: { "Idempotency-Key": "live-node-key" } };
  assert.equal((await chat({}, key)).id, (await chat({}, key)).id);

  for (const [variable, Class, status] of [["OBB_FAULT_429_URL", OpenAI.RateLimitError, 429], ["OBB_FAULT_503_URL", OpenAI.InternalServerError, 503]]) {
    const retrying = new OpenAI({ baseURL: `${env[variable]}/v1`, apiKey: env.OBB_USER_KEY, defaultQuery: { wait: "30" }, maxRetries: 2 });
    assert.equal((await retrying.chat.completions.create({ model: MODEL, messages: HI })).choices[0].message.content, "mock: Hello!");
    await rejects(new OpenAI({ baseURL: `${env[variable]}/v1`, apiKey: env.OBB_USER_KEY, maxRetries: 0 }).models.list(), Class, status);
  }

  const models = [];
  for await (const model of waited.models.list()) models.push(model.id);
  assert.deepEqual(models.sort(), [MODEL, SLASHED].sort());
  assert.equal((await waited.models.retrieve(MODEL)).id, MODEL);
  assert.equal((await waited.models.retrieve(SLASHED)).id, SLASHED);
  const missing = await rejects(waited.models.retrieve("no-such-model"), OpenAI.NotFoundError, 404);
  assert.equal(missing.code, "model_not_found");
  // A stream asked for without any wait is still answered as a stream, never as a JSON 202.
  let unwaited = "";
  const plain = new OpenAI({ baseURL: base, apiKey: env.OBB_USER_KEY });
  for await (const chunk of await plain.chat.completions.create({ model: MODEL, messages: HI, stream: true })) {
    unwaited += chunk.choices[0]?.delta?.content || "";
  }
  assert.equal(unwaited, STREAMED);
  assert.equal((await waited.get(`/jobs/${env.OBB_JOB_ID}`)).status, "completed");
  await rejects(waited.post(`/jobs/${env.OBB_JOB_ID}/cancel`), OpenAI.ConflictError, 409);
  assert.equal((await waited.post("/results/poll", { body: { ids: [env.OBB_JOB_ID] } })).jobs[0].status, "completed");

  // The Batch API, end to end: upload, create, poll until completed, list, the output file read
  // line by line, a cancel, a delete, and an unknown input file.
  const lines = [0, 1, 2].map((i) => `${JSON.stringify({ custom_id: `live-${i}`, method: "POST", url: "/v1/chat/completions",
    body: { model: MODEL, messages: [{ role: "user", content: `Line ${i}` }] } })}\n`).join("");
  const upload = async (text, name) => plain.files.create({
    file: await OpenAI.toFile(Buffer.from(text), name, { type: "application/jsonl" }), purpose: "batch" });
  const uploaded = await upload(lines, "input.jsonl");
  assert.match(uploaded.id, /^file-/);
  assert.deepEqual([uploaded.object, uploaded.purpose, uploaded.filename, uploaded.bytes],
    ["file", "batch", "input.jsonl", Buffer.byteLength(lines)]);
  assert.deepEqual(await plain.files.retrieve(uploaded.id), uploaded);
  assert.ok((await ids(plain.files.list({ purpose: "batch" }))).includes(uploaded.id));
  const batch = await plain.batches.create({ input_file_id: uploaded.id, endpoint: "/v1/chat/completions",
    completion_window: "24h", metadata: { run: "live-node" } });
  assert.match(batch.id, /^batch_/);
  assert.deepEqual([batch.status, batch.input_file_id, batch.endpoint, batch.metadata],
    ["validating", uploaded.id, "/v1/chat/completions", { run: "live-node" }]);
  const done = await until(() => plain.batches.retrieve(batch.id),
    (b) => !["validating", "in_progress", "finalizing"].includes(b.status));
  assert.equal(done.status, "completed");
  assert.deepEqual(done.request_counts, { total: 3, completed: 3, failed: 0 });
  assert.ok(done.completed_at !== null && done.error_file_id === null);
  assert.ok((await ids(plain.batches.list({ limit: 1 }))).includes(batch.id)); // pages on through `after`
  const text = await (await plain.files.content(done.output_file_id)).text();
  const output = new Map(text.trim().split("\n").map((line) => JSON.parse(line)).map((line) => [line.custom_id, line]));
  assert.deepEqual([...output.keys()].sort(), ["live-0", "live-1", "live-2"]);
  for (const [customId, line] of output) {
    assert.equal(line.response.status_code, 200);
    assert.equal(line.error, null);
    assert.equal(line.response.body.object, "chat.completion");
    assert.equal(line.response.body.choices[0].message.content, `mock: Line ${customId.replace("live-", "")}`);
  }
  const outputFile = await plain.files.retrieve(done.output_file_id);
  assert.deepEqual([outputFile.purpose, outputFile.bytes], ["batch_output", Buffer.byteLength(text)]);

  // A model no node serves: the second batch waits in_progress until it is cancelled.
  const stuck = await upload(lines.replaceAll(MODEL, "live-unserved"), "stuck.jsonl");
  const second = await plain.batches.create({ input_file_id: stuck.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
  await until(() => plain.batches.retrieve(second.id), (b) => b.status === "in_progress");
  const cancelling = await plain.batches.cancel(second.id);
  assert.equal(cancelling.id, second.id);
  assert.ok(["cancelling", "cancelled"].includes(cancelling.status), cancelling.status);
  const cancelled = await until(() => plain.batches.retrieve(second.id), (b) => b.status !== "cancelling");
  assert.equal(cancelled.status, "cancelled");
  assert.notEqual(cancelled.cancelled_at, null);
  const listed = await ids(plain.batches.list());
  assert.ok(listed.includes(second.id) && listed.indexOf(second.id) < listed.indexOf(batch.id), "newest first");

  const deleted = await plain.files.delete(uploaded.id);
  assert.deepEqual([deleted.id, deleted.object, deleted.deleted], [uploaded.id, "file", true]);
  await rejects(plain.files.retrieve(uploaded.id), OpenAI.NotFoundError, 404);
  const unknown = await rejects(plain.batches.create({ input_file_id: "file-unknown", endpoint: "/v1/chat/completions",
    completion_window: "24h" }), OpenAI.BadRequestError, 400);
  assert.equal(unknown.param, "input_file_id");

  // The Responses API: a background response polled until completed, its input items, its
  // delete; one answered at once and a follow-up through previous_response_id; a cancel; the
  // event stream, raw and through the SDK's stream helper.
  const queued = await plain.responses.create({ model: MODEL, input: "Hello!", background: true });
  assert.match(queued.id, /^resp_/);
  assert.deepEqual([queued.object, queued.status, queued.background, queued.output_text], ["response", "queued", true, ""]);
  const finished = await until(() => plain.responses.retrieve(queued.id), (r) => ["completed", "incomplete", "failed"].includes(r.status));
  assert.deepEqual([finished.id, finished.status, finished.output_text], [queued.id, "completed", "mock: Hello!"]);
  assert.ok(finished.usage.total_tokens > 0);
  assert.equal(finished.usage.total_tokens, finished.usage.input_tokens + finished.usage.output_tokens);
  const given = [];
  for await (const item of plain.responses.inputItems.list(queued.id)) given.push([item.type, item.role, item.content.map((c) => c.text)]);
  assert.deepEqual(given, [["message", "user", ["Hello!"]]]);
  await plain.responses.delete(queued.id);
  await rejects(plain.responses.retrieve(queued.id), OpenAI.NotFoundError, 404);

  const answered = await plain.responses.create({ model: MODEL, input: "Hello!" });
  assert.deepEqual([answered.status, answered.output_text, answered.background], ["completed", "mock: Hello!", false]);
  assert.deepEqual([answered.output[0].type, answered.output[0].role], ["message", "assistant"]);
  const again = await plain.responses.create({ model: MODEL, input: "And again?", previous_response_id: answered.id });
  assert.deepEqual([again.status, again.output_text, again.previous_response_id], ["completed", "mock: And again?", answered.id]);
  const conversation = [];
  for await (const item of plain.responses.inputItems.list(again.id, { order: "asc" })) conversation.push([item.role, item.content.map((c) => c.text)]);
  assert.deepEqual(conversation, [["user", ["Hello!"]], ["assistant", ["mock: Hello!"]], ["user", ["And again?"]]]);

  // A model no node serves: the response stays queued until it is cancelled. Cancelling again
  // answers the cancelled response (idempotent, as OpenAI's); a completed one is a conflict.
  const waiting = await plain.responses.create({ model: "live-unserved", input: "Hello!", background: true });
  const cancelledResponse = await plain.responses.cancel(waiting.id);
  assert.deepEqual([cancelledResponse.id, cancelledResponse.status], [waiting.id, "cancelled"]);
  assert.equal((await plain.responses.retrieve(waiting.id)).status, "cancelled");
  assert.equal((await plain.responses.cancel(waiting.id)).status, "cancelled");
  await rejects(plain.responses.cancel(answered.id), OpenAI.ConflictError, 409);

  const events = [];
  for await (const event of await plain.responses.create({ model: MODEL, input: "Hello!", stream: true })) events.push(event);
  assert.equal(events[0].type, "response.created");
  assert.equal(events.at(-1).type, "response.completed");
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, n) => n));
  // Relayed live from the mock's own stream (`t{i} ` per delta).
  assert.equal(events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""), "t0 t1 t2 ");
  assert.equal(events.at(-1).response.status, "completed");
  // A background response's stream, asked for right after it is created: held, if the node has
  // not answered it yet, until it has.
  const later = await plain.responses.create({ model: MODEL, input: "Hello!", background: true });
  const resumed = [];
  for await (const event of await plain.responses.retrieve(later.id, { stream: true })) resumed.push(event);
  assert.deepEqual([resumed[0].type, resumed.at(-1).type], ["response.created", "response.completed"]);
  assert.equal(resumed.at(-1).response.id, later.id);
  assert.equal(resumed.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""), "mock: Hello!");
  const helper = plain.responses.stream({ model: MODEL, input: "Hello!" });
  let deltas = "";
  for await (const event of helper) if (event.type === "response.output_text.delta") deltas += event.delta;
  const final = await helper.finalResponse();
  assert.deepEqual([deltas, final.output_text, final.status], ["t0 t1 t2 ", "t0 t1 t2 ", "completed"]);

  // Embeddings through `wait`: the SDK asks for base64 unless told otherwise and hands the
  // caller floats either way; the mock's vector is (bytes, their sum, the first byte).
  const mockEmbedding = (text) => { const data = Buffer.from(text); return [data.length, data.reduce((a, b) => a + b, 0), data[0]]; };
  const vectors = await plain.embeddings.create({ model: MODEL, input: ["Hello!", "a queue"] }, { query: { wait: 30 } });
  assert.equal(vectors.object, "list");
  assert.deepEqual(vectors.data.map((e) => e.index), [0, 1]);
  assert.deepEqual(vectors.data.map((e) => Array.from(e.embedding)), [mockEmbedding("Hello!"), mockEmbedding("a queue")]);
  const floats = await waited.embeddings.create({ model: MODEL, input: "Hello!", encoding_format: "float" });
  assert.deepEqual(floats.data[0].embedding, mockEmbedding("Hello!"));
  assert.ok(floats.usage.total_tokens > 0);

  // Legacy completions through `wait`, and streamed (without any wait): the upstream's chunks, relayed live.
  const completed = await waited.completions.create({ model: MODEL, prompt: "Say this is a test", max_tokens: 16, temperature: 0 });
  assert.deepEqual([completed.object, completed.choices[0].finish_reason, completed.choices[0].text],
    ["text_completion", "stop", "mock: Say this is a test"]);
  let pieces = "";
  let chunkCount = 0;
  for await (const piece of await plain.completions.create({ model: MODEL, prompt: "Say this is a test", stream: true })) {
    assert.equal(piece.object, "text_completion");
    pieces += piece.choices[0]?.text || "";
    chunkCount += 1;
  }
  assert.ok(chunkCount > 0);
  assert.equal(pieces, STREAMED);

  const bad = await rejects(new OpenAI({ baseURL: base, apiKey: "sk-obb-bad", maxRetries: 0 }).models.list(), OpenAI.AuthenticationError, 401);
  assert.equal(bad.code, "invalid_api_key");
  await rejects(new OpenAI({ baseURL: base, apiKey: env.OBB_NODE_KEY, maxRetries: 0 }).chat.completions.create({ model: MODEL, messages: HI }),
    OpenAI.PermissionDeniedError, 403);
  console.log("node live catalogue passed with openai", VERSION);
}

main().catch((error) => { console.error(error); process.exit(1); });
