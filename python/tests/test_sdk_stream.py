"""The official OpenAI SDK reads the gateway's replay of a finished completion as a stream:
its stream helper accumulates the chunks back into the completion the upstream returned."""
import threading

import openai

# What a lax upstream returns for `n: 2` with tools: no `index` on the choices, no `role` on
# one message, `content: null` beside tool calls, logprobs and a refusal.
LAX_COMPLETION = {
    "id": "chatcmpl-tools", "object": "chat.completion", "created": 1_700_000_000, "model": "tools",
    "choices": [
        {"message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]},
         "finish_reason": "tool_calls"},
        {"message": {"content": None, "refusal": "I can't call tools for that."},
         "logprobs": {"content": None, "refusal": [
             {"token": "I", "logprob": -0.01, "bytes": [73], "top_logprobs": []}]}},
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
}


def test_the_openai_sdk_accumulates_a_replayed_multi_choice_tool_call_stream(stack):
    def node() -> None:
        _, submit = stack.act_as_node("tools")
        submit({"status": "COMPLETED", "result": LAX_COMPLETION})

    worker = threading.Thread(target=node)
    worker.start()
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.user, max_retries=0,
                           default_headers={"Prefer": "wait=20"})
    with client.chat.completions.stream(
        model="tools", messages=[{"role": "user", "content": "weather and time?"}],
        stream_options={"include_usage": True},
    ) as stream:
        done = stream.get_final_completion()
    worker.join(timeout=30)

    first, second = done.choices
    assert (first.index, first.finish_reason, first.message.role) == (0, "tool_calls", "assistant")
    assert first.message.content is None
    calls = [(c.id, c.type, c.function.name, c.function.arguments) for c in first.message.tool_calls]
    assert calls == [
        ("call_a", "function", "get_weather", '{"city":"Paris"}'),
        ("call_b", "function", "get_time", '{"tz":"CET"}'),
    ]
    assert (second.index, second.finish_reason, second.message.role) == (1, "stop", "assistant")
    assert second.message.refusal == "I can't call tools for that."
    assert [t.token for t in second.logprobs.refusal] == ["I"], "logprobs arrive once"
    assert done.usage.total_tokens == 13
