"""The README walkthrough ("Try it"), run as written against a real `make run`, so the
README cannot rot.

How it works: every ```sh block between `<!-- walkthrough:start -->` and
`<!-- walkthrough:end -->` in README.md is taken in order and run as ONE bash script
(`set -euo pipefail`), in a checkout of its own where `make run` was started the way
the README says (with SETTLE_WEBHOOK_ALLOW_PRIVATE=true). So variables set in one
block ($API, $OPS, $ADA, $BOB, $ADA_ACCOUNT, $BOB_NUMBER, $TRANSFER, the `api` helper)
are there in the next, exactly as in the reader's terminal. Only the ports differ:
the test sets SETTLE_HTTP_PORT, SETTLE_FLOWER_PORT, RECEIVER_PORT and ALERT_PORT to free ports,
which the blocks read with the README's defaults (`${SETTLE_HTTP_PORT:-8000}`).

To add a step (a statement, a balance alert, an operator look-up...): add a ```sh
block inside the markers, at the point of the story where it belongs, with a sentence
before it saying what it shows. Use `api` (curl that fails on an HTTP error) and the
variables above; a command that fails, or a pipeline whose `jq` finds nothing it can
print, fails this test. Example output, if you want to show some, goes in a ```text
block, which is not run. Then add to EXPECTED below a string your step's output must
contain (a step that prints nothing checkable can be left out), and run
`make test PYTEST_ARGS=tests/e2e/test_walkthrough.py`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.processes import free_port, make_run_checkout, running_make_run

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)

# What the walkthrough's output must show, in this order: each step did what it says.
EXPECTED = [
    "created operator ops@example.com",
    '{"kind":"deposit","status":"succeeded","amount":10000}',
    '"status":"succeeded","amount":1250',
    '{"amount":-1250,"balance_after":8750,"sequence":2}',
    "transfer.succeeded",  # the receiver's line...
    "500 USD succeeded (signature ok)",  # ...with a verified signature
    '{"type":"transfer.succeeded","amount":500}',
    '{"below":8000,"rearm_margin":500,"below_armed":true}',  # Ada's alert...
    "8250 -> 7950 USD (threshold 8000) (signature ok)",  # ...fired once, as a webhook
    '{"opening_balance":0,"closing_balance":7950,"entries":[10000,-1250,-500,-300]}',
    "4,transfer,-300,7950",  # the statement as CSV: its last entry
    '"balance":2050',  # an operator found Bob's account by its number...
    '"event_type":"admin.accounts_looked_up"',  # ...and the look-up was audited
    "transfers@",  # Flower lists both workers
    "webhooks@",
    "processes",  # settle status
    "no failing endpoints",
    "entries",  # settle transfers show
]


def walkthrough_script(readme: str) -> str:
    """The walkthrough's shell blocks, in order, as one script."""
    assert readme.count(START) == 1 and readme.count(END) == 1, "walkthrough markers"
    section = readme[readme.index(START) : readme.index(END)]
    blocks = SH_BLOCK.findall(section)
    assert blocks, "no ```sh block between the walkthrough markers"
    return "set -euo pipefail\n" + "\n".join(blocks)


def test_the_walkthrough_script_is_every_sh_block_between_the_markers():
    readme = (
        "intro\n```sh\nnot this\n```\n"
        f"{START}\n```sh\necho one\n```\ntext\n```text\nnot run\n```\n```sh\necho two\n```\n"
        f"{END}\n```sh\nnor this\n```\n"
    )
    assert walkthrough_script(readme) == "set -euo pipefail\necho one\n\necho two\n"


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl, jq")
def test_the_readme_walkthrough_runs_against_make_run(tmp_path):
    script = walkthrough_script(README.read_text())
    checkout = make_run_checkout(tmp_path / "checkout")
    with running_make_run(checkout, SETTLE_WEBHOOK_ALLOW_PRIVATE="true") as run:
        run.wait_until_ready()
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("SETTLE_") and name not in ("DATABASE_URL", "REDIS_URL")
        }
        env.update(
            SETTLE_HTTP_PORT=str(run.http_port),
            SETTLE_FLOWER_PORT=str(run.flower_port),
            RECEIVER_PORT=str(free_port()),
            ALERT_PORT=str(free_port()),
        )
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = result.stdout
        assert result.returncode == 0, f"{output[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        position = 0
        for expected in EXPECTED:
            found = output.find(expected, position)
            assert found >= 0, f"{expected!r} not found after position {position}:\n{output}"
            position = found + len(expected)
