"""`make run`: start embedded PostgreSQL/Redis when no URLs are given, migrate, run the Procfile.

Ctrl-C stops every Procfile process (honcho forwards it), then the embedded servers.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from dotenv import load_dotenv

from domain.migrate import migrate
from settle import metrics
from settle.config import RUN_ENV_FILE, Settings
from settle.devservices import start_missing_services, stop_all

ROOT = Path.cwd()
VAR = ROOT / "var"


def _flower_credentials() -> str:
    """A random Flower password per checkout, kept in var/ (never in the repository)."""
    path = VAR / "flower-basic-auth"
    if not path.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        path.write_text(f"settle:{secrets.token_urlsafe(12)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Into the environment of every Procfile process; the real environment wins. The same
    # parser as the Settings class (pydantic-settings reads .env with python-dotenv), so
    # quoting, `export` and ${VAR} mean the same to both.
    load_dotenv(ROOT / ".env", override=False)
    os.environ.setdefault("SETTLE_ENVIRONMENT", "development")
    os.environ.setdefault("FLOWER_BASIC_AUTH", _flower_credentials())
    # Every process writes its metrics here and the gateway's /metrics sums them
    # (settle/metrics.py); emptied at each start, as prometheus_client requires.
    os.environ.setdefault(metrics.MULTIPROC_VARIABLE, str(VAR / "metrics"))
    metrics.reset_multiprocess_dir(Path(os.environ[metrics.MULTIPROC_VARIABLE]))
    # The Procfile runs `settle serve NAME`; make sure ours (in this venv) is found.
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    services = start_missing_services(VAR, roles=True)
    run_env = ROOT / RUN_ENV_FILE
    try:
        run_env.write_text(
            "# written by `make run` while it runs; removed when it stops\n"
            f"DATABASE_URL={os.environ['DATABASE_URL']}\nREDIS_URL={os.environ['REDIS_URL']}\n"
            + (
                f"SETTLE_MIGRATION_DATABASE_URL={os.environ['SETTLE_MIGRATION_DATABASE_URL']}\n"
                if os.environ.get("SETTLE_MIGRATION_DATABASE_URL")
                else ""
            )
        )
        run_env.chmod(0o600)
        settings = Settings()  # what the Procfile's processes will read
        for warning in migrate(
            owner_url=settings.owner_database_url, app_url=settings.database_url
        ):
            logging.warning("database roles: %s", warning)
        port, flower_port = settings.http_port, settings.flower_port
        user = os.environ["FLOWER_BASIC_AUTH"].split(":", 1)[0]
        print(
            f"\n  Settle API   http://127.0.0.1:{port}   (docs: http://127.0.0.1:{port}/docs)\n"
            f"  Flower       http://127.0.0.1:{flower_port}   (user {user!r}, password in "
            f"var/flower-basic-auth unless FLOWER_BASIC_AUTH is set)\n"
            f"  Metrics      http://127.0.0.1:{port}/metrics\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        honcho = Path(sys.executable).parent / "honcho"
        process = subprocess.Popen([str(honcho), "start", "-f", str(ROOT / "Procfile")])  # noqa: S603
        # Ctrl-C reaches honcho directly (same process group); we wait for it to
        # stop its children before stopping the databases they use.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        returncode = process.wait()
        # Ctrl-C is how you stop `make run`; that is a clean exit, not a failure.
        return 0 if returncode in (130, -signal.SIGINT) else returncode
    finally:
        run_env.unlink(missing_ok=True)
        stop_all(services)


if __name__ == "__main__":
    sys.exit(main())
