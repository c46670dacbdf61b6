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

  let streamed = "";
  for await (const chunk of await chat({ stream: true })) {
    assert.equal(chunk.object, "chat.completion.chunk");
    streamed += chunk.choices[0]?.delta?.content || "";
  }
  assert.equal(streamed, "mock: Hello!");

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
  assert.equal(unwaited, "mock: Hello!");
  assert.equal((await waited.get(`/jobs/${env.OBB_JOB_ID}`)).status, "completed");
  await rejects(waited.post(`/jobs/${env.OBB_JOB_ID}/cancel`), OpenAI.ConflictError, 409);
  assert.equal((await waited.post("/results/poll", { body: { ids: [env.OBB_JOB_ID] } })).jobs[0].status, "completed");

  const bad = await rejects(new OpenAI({ baseURL: base, apiKey: "sk-obb-bad", maxRetries: 0 }).models.list(), OpenAI.AuthenticationError, 401);
  assert.equal(bad.code, "invalid_api_key");
  await rejects(new OpenAI({ baseURL: base, apiKey: env.OBB_NODE_KEY, maxRetries: 0 }).chat.completions.create({ model: MODEL, messages: HI }),
    OpenAI.PermissionDeniedError, 403);
  console.log("node live catalogue passed with openai", VERSION);
}

main().catch((error) => { console.error(error); process.exit(1); });
