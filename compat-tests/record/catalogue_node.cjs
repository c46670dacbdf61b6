// The compat catalogue, through the official OpenAI Node SDK, against the recording server.
// Usage: node catalogue_node.cjs BASE_URL
const OpenAI = require("openai");
const { VERSION: version } = require("openai/version");

const base = process.argv[2];
const SDK = "node";
const MODEL = "gpt-4o-mini";
const [USER, BAD, NODE] = ["sk-obb-compat-user", "sk-obb-compat-bad", "sk-obb-compat-node"];
const HI = [{ role: "user", content: "Hello!" }];
const LINES = [MODEL, MODEL].map((model, i) => `${JSON.stringify({ custom_id: `${SDK}-${i}`, method: "POST",
  url: "/v1/chat/completions", body: { model, messages: [{ role: "user", content: `Line ${i}` }] } })}\n`).join("");
// A model no node serves: its batch stays in_progress until cancelled.
const STUCK = LINES.replaceAll(MODEL, "compat-unserved");
const TOOLS = [{ type: "function", function: { name: "lookup", description: "Look a word up",
  parameters: { type: "object", properties: { query: { type: "string" } }, required: ["query"] } } }];

async function control(path, body) {
  await fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

async function record(name, call, fail = []) {
  await control("/__case", { name, sdk: SDK, version, fail });
  try {
    await call();
  } catch (error) {
    if (!(error instanceof OpenAI.APIError)) throw error;
  }
  await control("/__end", {});
}

async function main() {
  const waited = new OpenAI({ baseURL: `${base}/v1`, apiKey: USER, defaultQuery: { wait: "30" }, maxRetries: 2 });
  const prefer = new OpenAI({ baseURL: `${base}/v1`, apiKey: USER, defaultHeaders: { Prefer: "wait=30" } });
  const plain = new OpenAI({ baseURL: `${base}/v1`, apiKey: USER });
  const chat = (extra) => waited.chat.completions.create({ model: MODEL, messages: HI, ...extra });

  await record("plain_chat", () => chat({}));
  await record("multi_turn", () => chat({ messages: [
    { role: "system", content: "You are terse." }, { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello." }, { role: "user", content: "And again?" }] }));
  await record("tools_call", () => chat({ messages: [{ role: "user", content: "What is a queue?" }], tools: TOOLS,
    tool_choice: { type: "function", function: { name: "lookup" } } }));
  await record("tools_followup", () => chat({ tools: TOOLS, messages: [
    { role: "user", content: "What is a queue?" },
    { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function",
      function: { name: "lookup", arguments: '{"query": "queue"}' } }] },
    { role: "tool", tool_call_id: "call_1", content: "a line of waiting things" }] }));
  await record("json_schema", () => chat({ response_format: { type: "json_schema", json_schema: { name: "answer", strict: true,
    schema: { type: "object", properties: { answer: { type: "string" }, confidence: { type: "number" } },
      required: ["answer", "confidence"], additionalProperties: false } } } }));
  await record("n_two", () => chat({ n: 2 }));
  await record("sampling", () => chat({ seed: 42, temperature: 0.3, max_completion_tokens: 64 }));
  await record("stream", async () => { for await (const _ of await chat({ stream: true })) { /* drain */ } });
  await record("prefer_header", () => prefer.chat.completions.create({ model: MODEL, messages: HI }));
  await record("idempotency_key", () => waited.chat.completions.create({ model: MODEL, messages: HI },
    { headers: { "Idempotency-Key": `compat-key-${SDK}` } }));
  await record("retry_429", () => chat({}), [429]);
  await record("retry_503", () => chat({}), [503]);
  await record("models_list", async () => { for await (const _ of waited.models.list()) { /* drain */ } });
  await record("job_get", () => waited.get("/jobs/job-recorded"));
  await record("job_cancel", () => waited.post("/jobs/job-recorded/cancel"));
  await record("results_poll", () => waited.post("/results/poll", { body: { ids: ["job-recorded"] } }));
  await record("batch_flow", async () => {
    const uploaded = await plain.files.create({ file: await OpenAI.toFile(Buffer.from(LINES), "input.jsonl",
      { type: "application/jsonl" }), purpose: "batch" });
    await plain.files.retrieve(uploaded.id);
    await plain.files.list({ purpose: "batch", limit: 1 });
    const batch = await plain.batches.create({ input_file_id: uploaded.id, endpoint: "/v1/chat/completions",
      completion_window: "24h", metadata: { sdk: SDK } });
    const done = await plain.batches.retrieve(batch.id);
    await plain.batches.list({ limit: 1 });
    await (await plain.files.content(done.output_file_id)).text();
    await plain.files.delete(uploaded.id);
  });
  await record("batch_cancel", async () => {
    const uploaded = await plain.files.create({ file: await OpenAI.toFile(Buffer.from(STUCK), "stuck.jsonl",
      { type: "application/jsonl" }), purpose: "batch" });
    const batch = await plain.batches.create({ input_file_id: uploaded.id, endpoint: "/v1/chat/completions",
      completion_window: "24h" });
    await plain.batches.retrieve(batch.id);
    await plain.batches.cancel(batch.id);
  });
  await record("batch_unknown_file", () => plain.batches.create({ input_file_id: "file-unknown",
    endpoint: "/v1/chat/completions", completion_window: "24h" }));
  await record("responses_background", async () => {
    const queued = await plain.responses.create({ model: MODEL, input: "Hello!", background: true });
    await plain.responses.retrieve(queued.id);
    for await (const _ of plain.responses.inputItems.list(queued.id)) { /* drain */ }
    await plain.responses.delete(queued.id);
  });
  await record("responses_create", async () => {
    const first = await plain.responses.create({ model: MODEL, input: "Hello!" });
    await plain.responses.create({ model: MODEL, input: "And again?", previous_response_id: first.id });
  });
  // A model no node serves: the response stays queued until it is cancelled.
  await record("responses_cancel", async () => {
    const queued = await plain.responses.create({ model: "compat-unserved", input: "Hello!", background: true });
    await plain.responses.cancel(queued.id);
  });
  await record("responses_stream", async () => {
    for await (const _ of await plain.responses.create({ model: MODEL, input: "Hello!", stream: true })) { /* drain */ }
  });
  // The SDK asks for base64 vectors unless told otherwise; `wait` makes the answer the list.
  await record("embeddings", () => plain.embeddings.create({ model: MODEL, input: ["Hello!", "a queue"] },
    { query: { wait: 30 } }));
  await record("embeddings_float", () => waited.embeddings.create({ model: MODEL, input: "Hello!", encoding_format: "float" }));
  await record("completions", () => waited.completions.create({ model: MODEL, prompt: "Say this is a test",
    max_tokens: 16, temperature: 0 }));
  await record("completions_stream", async () => {
    for await (const _ of await waited.completions.create({ model: MODEL, prompt: "Say this is a test", stream: true })) { /* drain */ }
  });
  await record("bad_key", () => new OpenAI({ baseURL: `${base}/v1`, apiKey: BAD, maxRetries: 0 }).models.list());
  await record("wrong_role", () => new OpenAI({ baseURL: `${base}/v1`, apiKey: NODE, maxRetries: 0 })
    .chat.completions.create({ model: MODEL, messages: HI }));
  console.log("recorded the node catalogue with openai", version);
}

main().catch((error) => { console.error(error); process.exit(1); });
