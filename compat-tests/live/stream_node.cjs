// Live streaming through the official OpenAI Node SDK, unmodified, against a real gateway and node.
// Run by compat-tests (tests/compat/live.rs) with OBB_BASE_URL, OBB_USER_KEY, OBB_MODEL (a model a
// node serves, whose upstream streams with a delay between chunks) and OBB_LATE_MODEL (a model no
// node serves until this script prints its `open` line).
//
// It prints one JSON line per case: `live` (a `stream: true` chat with `include_usage`) and
// `progress` (the same with `X-OBB-Progress: true`, asked for while the job waits in the queue),
// each with what the SDK's iterator handed over and when: every item's `object`, whether it had
// `choices`, its text, the mock's `obb_sent_us` and the wall-clock microseconds it arrived at.
// The raw bytes of each answer are kept by a `fetch` that only watches (the global one, its body
// teed), so the driver can tell what the gateway sent from what the SDK made of it.
const OpenAI = require("openai");
const { VERSION } = require("openai/version");

const env = process.env;
const HI = [{ role: "user", content: "Hello!" }];
const bodies = [];

async function watchedFetch(url, init) {
  const response = await fetch(url, init);
  if (!response.body) return response;
  const [forSdk, forUs] = response.body.tee();
  const seen = { text: "", done: null };
  bodies.push(seen);
  seen.done = (async () => {
    const decoder = new TextDecoder();
    for await (const part of forUs) seen.text += decoder.decode(part, { stream: true });
  })();
  return new Response(forSdk, { status: response.status, statusText: response.statusText, headers: response.headers });
}

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

// What the iterator hands over, as a caller that guards `choices` reads it.
async function itemsOf(stream) {
  const items = [];
  for await (const chunk of stream) {
    const at = nowUs();
    const choices = chunk.choices;
    items.push({ object: chunk.object, choices: choices !== undefined && choices !== null,
      text: choices?.[0]?.delta?.content ?? null, usage: chunk.usage ?? null,
      sent_us: chunk.obb_sent_us ?? null, at_us: at });
  }
  return items;
}

(async () => {
  const client = new OpenAI({ baseURL: `${env.OBB_BASE_URL}/v1`, apiKey: env.OBB_USER_KEY, fetch: watchedFetch });

  const started = nowUs();
  const live = await client.chat.completions.create({ model: env.OBB_MODEL, messages: HI, stream: true,
    stream_options: { include_usage: true } });
  const liveItems = await itemsOf(live);
  await bodies[bodies.length - 1].done;
  console.log(JSON.stringify({ case: "live", started_us: started, items: liveItems, raw: bodies[bodies.length - 1].text }));

  const { data, response } = await client.chat.completions
    .create({ model: env.OBB_LATE_MODEL, messages: HI, stream: true, stream_options: { include_usage: true } },
      { headers: { "X-OBB-Progress": "true" } })
    .withResponse();
  console.log(JSON.stringify({ case: "open", job: response.headers.get("x-obb-job-id") }));
  const progress = await itemsOf(data);
  await bodies[bodies.length - 1].done;
  console.log(JSON.stringify({ case: "progress", items: progress, raw: bodies[bodies.length - 1].text }));
  console.log("node stream cases passed with openai", VERSION);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
