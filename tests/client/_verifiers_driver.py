"""Run in a fresh virtual environment holding verifiers 0.4.0 and this project's wheel:
the docs' verifiers snippet (argv[1], a file) scored by verifiers' own ``Task.score`` for each
completion (argv[3:]) under the query argv[2], as after a rollout; prints the traces' rewards."""

import asyncio
import json
import sys
from pathlib import Path

import verifiers.v1 as vf
from verifiers.v1.trace import AgentInfo, Trace, TraceTask

snippet: dict[str, object] = {}
exec(Path(sys.argv[1]).read_text(), snippet)  # the docs' own code
SuggestionTask = snippet["SuggestionTask"]


async def main() -> None:
    out = []
    for completion in sys.argv[3:]:
        task = SuggestionTask(vf.TaskData(prompt=sys.argv[2]))
        trace = Trace(
            task=TraceTask(type="SuggestionTask", data=task.data),
            agent=AgentInfo(config=vf.AgentConfig()),
            root_reply=completion,
        )
        await task.score(trace)
        out.append({name: r.score for name, r in trace.rewards.items()})
    print(json.dumps(out))


asyncio.run(main())
