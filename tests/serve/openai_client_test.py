"""tests/serve/openai_client_test.py — `moe serve` driven by the official
`openai` Python client: chat and completions, streamed and not, stop
sequences, usage, token-id prompts, errors as the client's exceptions, and
requests at once equal to each alone; greedy answers compared with the
`moe generate` and `moe chat` commands. Run by openai_test.sh, which starts
the server:  openai_client_test.py BASE_URL API_KEY MOE_BINARY CHECKPOINT"""
import concurrent.futures
import json
import subprocess
import sys
import time

import openai

base_url, api_key, moe, ck = sys.argv[1:5]
model = ck.rstrip("/").split("/")[-1]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
failures = []
passes = 0


def check(name, ok, detail=""):
    global passes
    if ok:
        passes += 1
        print("ok:", name)
    else:
        failures.append(name)
        print("FAIL:", name, detail)


def moe_json(*args, stdin=None):
    out = subprocess.run([moe, *args, "--json"], input=stdin, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.splitlines()[0])


models = client.models.list()
check("models.list names the served model", [m.id for m in models.data] == [model], models)

# chat, whole and streamed, against moe chat's first turn
ref = moe_json("chat", "--model", ck, "-n", "4", stdin="Hi\n")
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                   temperature=0)
c = r.choices[0]
check("chat equals moe chat", c.message.role == "assistant" and c.message.content == ref["text"],
      (c.message.content, ref["text"]))
check("chat usage and finish_reason", r.usage.prompt_tokens == 17 and r.usage.completion_tokens == 4 and
      r.usage.total_tokens == 21 and c.finish_reason == "length", r.usage)
chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                             temperature=0, stream=True, stream_options={"include_usage": True}))
text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
check("chat streamed: the same text, one finish_reason, usage last",
      text == ref["text"] and reasons == ["length"] and chunks[-1].usage is not None and
      chunks[-1].usage.completion_tokens == 4 and chunks[0].choices[0].delta.role == "assistant", (text, reasons))
r = client.chat.completions.create(model=model, messages=[{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "Hi"}], max_completion_tokens=4,
                                   temperature=0)
ref = moe_json("chat", "--model", ck, "-n", "4", "--system", "Be brief.", stdin="Hi\n")
check("chat with a system message equals moe chat --system", r.choices[0].message.content == ref["text"] and
      r.usage.prompt_tokens == ref["prompt_tokens"], (r.choices[0].message.content, ref["text"]))

# completions: text and token ids, against moe generate
ref = moe_json("generate", "--model", ck, "--prompt", "Hello world", "-n", "5")
r = client.completions.create(model=model, prompt="Hello world", max_tokens=5, temperature=0)
check("completion of text equals moe generate", r.choices[0].text == ref["text"] and
      r.choices[0].finish_reason == "length" and r.usage.prompt_tokens == 3, (r.choices[0].text, ref["text"]))
stream = client.completions.create(model=model, prompt="Hello world", max_tokens=5, temperature=0, stream=True)
check("completion streamed equals it", "".join(ch.choices[0].text for ch in stream) == ref["text"])
ids = [51, 130, 212, 151, 205, 118, 52, 51, 126, 132, 74, 47, 125, 70, 65, 189, 46, 138, 0]
ref = moe_json("generate", "--model", ck, "--tokens", ",".join(map(str, ids)), "-n", "10", "--ignore-eos")
r = client.completions.create(model=model, prompt=ids, max_tokens=10, temperature=0,
                              extra_body={"ignore_eos": True, "return_token_ids": True})
got = (r.choices[0].model_extra or {}).get("token_ids")
check("completion of token ids equals moe generate --tokens", got == ref["ids"], (got, ref["ids"]))
r = client.completions.create(model=model, prompt="Hello world", max_tokens=5, temperature=0, stop=["jum", "zz"])
check("a stop sequence", r.choices[0].text == "V-" and r.choices[0].finish_reason == "stop", r.choices[0])
r1 = client.completions.create(model=model, prompt="Hello world", max_tokens=8, temperature=0.9, seed=7)
r2 = client.completions.create(model=model, prompt="Hello world", max_tokens=8, temperature=0.9, seed=7)
check("a seed repeats a sampled answer", r1.choices[0].text == r2.choices[0].text)


# errors as the client raises them
def raises(name, exc, fn):
    try:
        fn()
    except exc as e:
        check(name, True)
        return e
    except Exception as e:  # another error: say which
        check(name, False, repr(e))
        return None
    check(name, False, "no error")


raises("a wrong key: AuthenticationError", openai.AuthenticationError,
       lambda: openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list())
raises("an unknown model: NotFoundError", openai.NotFoundError,
       lambda: client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}]))
e = raises("huge max_tokens: BadRequestError", openai.BadRequestError,
           lambda: client.completions.create(model=model, prompt="Hi", max_tokens=10 ** 9))
check("its code is context_length_exceeded", e is not None and e.code == "context_length_exceeded", e)
raises("empty messages: BadRequestError", openai.BadRequestError,
       lambda: client.chat.completions.create(model=model, messages=[]))

# several at once: each the same as alone; aggregate throughput reported
prompts = [[(k * 7 + 3) % 250, (k * 11 + 5) % 250, k + 40, 17, (k * 3 + 90) % 250] for k in range(4)]


def run(p):
    r = client.completions.create(model=model, prompt=p, max_tokens=32, temperature=0,
                                  extra_body={"ignore_eos": True, "return_token_ids": True})
    return r.choices[0].model_extra["token_ids"]


t0 = time.time()
alone = [run(p) for p in prompts]
t_alone = time.time() - t0
t0 = time.time()
with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
    together = list(pool.map(run, prompts))
t_together = time.time() - t0
check("four requests at once equal each alone", together == alone)
n = sum(len(x) for x in together)
print(f"throughput: {n / t_alone:.1f} tok/s one at a time, {n / t_together:.1f} tok/s four at once")

print(f"{passes} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
