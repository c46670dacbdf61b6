// The official OpenAI Node SDK, unchanged, pointed at the gateway.
//
//   npm install openai
//   OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... node examples/openai_node_sdk.cjs
const OpenAI = require("openai");

async function main() {
  const base = process.env.OBB_BASE_URL || "http://127.0.0.1:8000";
  const apiKey = process.env.OBB_API_KEY;
  // `wait` makes each call synchronous: the gateway holds it until the job is done.
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, defaultQuery: { wait: "60" } });
  const reply = await client.chat.completions.create({
    model: "echo",
    messages: [{ role: "user", content: "Hello, Node!" }],
  });
  console.log("plain:", reply.choices[0].message.content);

  const streaming = new OpenAI({ baseURL: `${base}/v1`, apiKey, defaultHeaders: { Prefer: "wait=60" } });
  const stream = await streaming.chat.completions.create({
    model: "echo",
    messages: [{ role: "user", content: "Stream me" }],
    stream: true,
  });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content || "";
  console.log("streamed:", text);

  const models = await client.models.list();
  console.log("models:", models.data.map((m) => m.id).join(","));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
