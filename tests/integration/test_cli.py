"""The CLI against real Postgres/Redis: every command's --json shape, refusals and exit codes,
--help everywhere, completion, the progress bar, ``status --watch`` and a closed pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import Engine

from campaigns.cli.main import cli, main
from campaigns.dev.processes import Child
from tests.fixtures.processes import ROOT, start_worker, wait_for
from tests.integration.dispatch_support import campaign_with_contacts, phone

CLI = [sys.executable, "-m", "campaigns.cli.main"]


@pytest.fixture(scope="module")
def ingest_process(
    stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Child]:
    """``wa-campaigns worker -Q ingest`` as a process, as an operator runs it: the uploads
    here go through the real worker command (the ``worker`` command's happy path)."""
    proc = start_worker(stack, tmp_path_factory.mktemp("cli-logs"), name="ingest", queues="ingest")
    try:
        wait_for(lambda: " ready." in proc.log_tail(), timeout=60, what="the ingest worker")
        yield proc
    finally:
        proc.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # --json: exactly one JSON object on stdout
    return code, json.loads(out[0])


def create_campaign(capsys: pytest.CaptureFixture[str], *extra: str) -> int:
    code, campaign = run(
        capsys, "campaign", "create", "--name", "x", "--region", "DE", "--json", *extra
    )
    assert code == 0, campaign
    return int(campaign["id"])


# --------------------------------------------------------------------------- happy paths


def test_create_upload_status_export(
    db: Engine, ingest_process: Child, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, campaign = run(
        capsys,
        *("campaign", "create", "--name", "Black Friday", "--template", "bf_offer"),
        *("--language", "en", "--region", "DE", "--variables", " Name, ", "--json"),
    )
    assert code == 0
    assert (campaign["status"], campaign["region"], campaign["total"]) == ("draft", "DE", 0)
    assert campaign["body_variables"] == ["Name"]
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("Mobile;Name\n0151 23456701;Anna\n;Empty\n0151 23456701;Dup\n")
    code, upload = run(capsys, "upload", str(campaign["id"]), str(csv_file), "--json")
    assert code == 0
    assert (upload["status"], upload["valid"], upload["invalid"]) == ("completed", 1, 2)
    assert upload["reasons"] == {"empty_phone": 1, "duplicate": 1}
    code, again = run(capsys, "upload-status", str(upload["id"]), "--json")
    assert (code, again) == (0, upload)
    code, status = run(capsys, "status", str(campaign["id"]), "--json")
    assert status["counts"]["initial"] == 1 and status["counts"]["invalid_record"] == 2
    assert main(["contacts", str(campaign["id"]), "--state", "invalid_record", "--csv"]) == 0
    exported = capsys.readouterr().out.splitlines()
    assert exported[0].startswith("line,phone_raw")
    assert [line.split(",")[0] for line in exported[1:]] == ["3", "4"]
    code, page = run(capsys, "contacts", str(campaign["id"]), "--limit", "2", "--json")
    assert [c["line"] for c in page["items"]] == [2, 3] and page["next_after_id"] is not None
    code, listed = run(capsys, "campaign", "list", "--json")
    assert [c["id"] for c in listed["campaigns"]] == [campaign["id"]]


def test_human_output(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaign", "create", "--name", "Plain", "--region", "DE"]) == 0
    assert capsys.readouterr().out == "campaign 1 created: Plain\n"
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(3)])
    assert main(["status", str(campaign_id)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"campaign {campaign_id} 'dispatch': draft"
    assert lines[1].split() == ["initial", "3"] and lines[2].split() == ["total", "3"]
    assert main(["campaign", "list"]) == 0
    listed = sorted(line.split() for line in capsys.readouterr().out.splitlines())
    assert listed == [
        ["1", "draft", "0", "contacts", "Plain"],
        [str(campaign_id), "draft", "3", "contacts", "dispatch"],
    ]
    assert main(["contacts", str(campaign_id)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_admin_commands(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    campaign_id = str(campaign_with_contacts(db, [phone(i) for i in range(3)]))
    assert run(capsys, "start", campaign_id, "--json")[1]["status"] == "running"
    assert run(capsys, "pause", campaign_id, "--json")[1]["status"] == "paused"
    code, report = run(capsys, "remove", campaign_id, "--phone", phone(0), "--json")
    assert (code, report["removed"]) == (0, 1)
    assert run(capsys, "resume", campaign_id, "--json")[1]["status"] == "running"
    code, cancelled = run(capsys, "cancel", campaign_id, "--json")
    assert (code, cancelled["status"], cancelled["counts"]["canceled_by_admin"]) == (
        0,
        "cancelled",
        2,
    )
    scheduled = str(campaign_with_contacts(db, [phone(9)]))
    code, later = run(capsys, "start", scheduled, "--at", "2099-12-01T09:00:00Z", "--json")
    assert (code, later["status"]) == (0, "scheduled")


def test_upload_retry_queues_a_failed_upload_again(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from campaigns.services import uploads
    from campaigns.storage import uploads as uploads_db

    campaign_id = create_campaign(capsys)
    spooled = uploads.spool_upload(iter([b"phone\n01512345678\n"]), tmp_path, max_bytes=1000)
    upload = uploads.register_upload(db, campaign_id, spooled, filename="c.csv")
    with db.begin() as conn:
        uploads_db.update_upload(conn, upload.id, status="failed", error="database went away")
    code, queued = run(capsys, "upload-retry", str(upload.id), "--json")
    assert (code, queued["id"], queued["status"], queued["error"]) == (
        0,
        upload.id,
        "received",
        None,
    )


def test_campaign_list_pages_newest_first(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [create_campaign(capsys) for _ in range(3)]
    code, first = run(capsys, "campaign", "list", "--limit", "2", "--json")
    assert code == 0
    assert [c["id"] for c in first["campaigns"]] == [ids[2], ids[1]]
    assert first["next_after_id"] == ids[1]
    code, last = run(
        capsys, "campaign", "list", "--limit", "2", "--after-id", str(ids[1]), "--json"
    )
    assert ([c["id"] for c in last["campaigns"]], last["next_after_id"]) == ([ids[0]], None)


def test_token_create_list_revoke(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, created = run(capsys, "token", "create", "--name", "ops", "--json")
    assert code == 0 and created["token"].startswith("wac_") and created["name"] == "ops"
    assert main(["token", "create", "--name", "plain"]) == 0
    assert capsys.readouterr().out.startswith("wac_")
    code, listed = run(capsys, "token", "list", "--json")
    assert [(t["name"], t["revoked_at"]) for t in listed["tokens"]] == [
        ("ops", None),
        ("plain", None),
    ]
    assert set(listed["tokens"][0]) == {"id", "name", "created_at", "revoked_at"}
    assert created["token"] not in json.dumps(listed)  # never the secret itself
    code, revoked = run(capsys, "token", "revoke", "ops", "--json")
    assert (code, [t["id"] for t in revoked["revoked"]]) == (0, [created["id"]])
    assert run(capsys, "token", "revoke", "ops", "--json") == (0, {"revoked": []})
    assert main(["token", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "revoked" in lines[0] and "ops" in lines[0] and "revoked" not in lines[1]


def test_migrate_is_idempotent(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "migrate", "--json") == (0, {"migrated": True})
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out == "schema is at head\n"


def test_dev_down_takes_json_before_or_after_the_action(tmp_path: Path) -> None:
    """``dev ACTION`` was one command; ``--json`` stays accepted on either side of the action.
    (``dev up`` itself, which starts the stores, is tests/integration/test_devenv.py.)"""
    for argv in (["dev", "down", "--json"], ["dev", "--json", "down"], ["dev", "down"]):
        done = subprocess.run(
            [*CLI, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DATA_DIR": str(tmp_path)},
        )
        assert (done.returncode, done.stderr) == (0, ""), argv
        expected = "stopped: nothing\n" if "--json" not in argv else '{"stopped": []}\n'
        assert done.stdout == expected, argv


# --------------------------------------------------------------------------- refusals


def refusal_cases(campaign_id: int, done_upload: int, empty: Path) -> list[tuple[str, ...]]:
    """(expected code, *argv) for a refusal of each command that can refuse."""
    c = str(campaign_id)
    return [
        ("invalid_campaign", "campaign", "create", "--name", "x", "--region", "Germany"),
        ("campaign_not_found", "status", "999"),
        ("empty_file", "upload", c, str(empty)),
        ("campaign_not_found", "upload", "999", str(empty)),
        ("file_not_found", "upload", c, str(empty.parent / "missing.csv")),
        ("upload_not_found", "upload-status", "999"),
        ("upload_finished", "upload-retry", str(done_upload)),
        ("invalid_state", "contacts", c, "--state", "bogus"),
        ("campaign_not_found", "contacts", "999", "--csv"),
        ("bad_time", "start", c, "--at", "next tuesday"),
        ("campaign_not_found", "start", "999"),
        ("pause_not_allowed", "pause", c),
        ("resume_not_allowed", "resume", c),
        ("nothing_to_remove", "remove", c),
        ("token_not_found", "token", "revoke", "nobody"),
    ]


def test_every_refusal_exits_2_in_one_shape(
    db: Engine, ingest_process: Child, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    campaign_id = create_campaign(capsys)
    good = tmp_path / "good.csv"
    good.write_text("phone\n01512345678\n")
    code, done = run(capsys, "upload", str(campaign_id), str(good), "--json")
    assert (code, done["status"]) == (0, "completed")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    for expected, *argv in refusal_cases(campaign_id, done["id"], empty):
        code, refused = run(capsys, *argv, "--json")
        assert (code, list(refused), refused["error"]["code"]) == (2, ["error"], expected), argv
        assert set(refused["error"]) == {"code", "message"} and refused["error"]["message"]
        # Without --json: the same message on stderr, nothing on stdout.
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", f"error: {refused['error']['message']}\n")
    code, refused = run(capsys, "contacts", str(campaign_id), "--state", "bogus", "--json")
    assert "initial" in refused["error"]["message"]  # says which states there are


def test_upload_that_does_not_complete_exits_2_with_its_report(
    db: Engine, ingest_process: Child, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    campaign_id = create_campaign(capsys)
    # Its head passes the checks at upload; the worker finds a NUL byte further on.
    binary_tail = tmp_path / "tail.csv"
    rows = "".join(f"{phone(i)}\n" for i in range(5000))
    binary_tail.write_bytes(f"phone\n{rows}".encode() + b"\x00\n")
    code, upload = run(capsys, "upload", str(campaign_id), str(binary_tail), "--json")
    assert (code, upload["status"], upload["valid"]) == (2, "refused", 0)
    assert "NUL byte in line 5002" in upload["error"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status"], "Missing argument 'CAMPAIGN_ID'"),
        (["status", "one"], "'one' is not a valid integer"),
        (["nope"], "No such command 'nope'"),
        (["campaign", "create", "--region", "DE"], "Missing option '--name'"),
        (["worker", "--bogus"], "No such option '--bogus'"),
        (["dev", "sideways"], "No such command 'sideways'"),
        (["completion", "tcsh"], "'tcsh' is not one of"),
        (["status", "1", "--watch", "--interval", "0.01"], "0.01 is not in the range"),
    ],
)
def test_bad_usage_exits_2_with_clicks_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Usage: wa-campaigns" in captured.err and message in captured.err


def test_an_unexpected_failure_exits_1_with_a_traceback(tmp_path: Path) -> None:
    unreachable = "postgresql+psycopg://wa:wa@127.0.0.1:9/nowhere?connect_timeout=2"
    done = subprocess.run(
        [*CLI, "campaign", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": unreachable, "DATA_DIR": str(tmp_path)},
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert "Traceback" in done.stderr and "OperationalError" in done.stderr


# --------------------------------------------------------------------------- help, completion


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[list[str]]:
    for name, command in group.commands.items():
        yield [*prefix, name]
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


@pytest.mark.parametrize(
    "path",
    [[], *(p for p in command_paths() if p != ["simulator"])],
    ids=lambda p: " ".join(p) or "wa-campaigns",
)
def test_help_of_every_command(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: {' '.join(['wa-campaigns', *path])} ")
    assert main([*path, "-h"]) == 0
    assert capsys.readouterr().out == out


def test_simulator_help_is_the_simulators_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulator", "--help"])
    assert exited.value.code == 0
    assert "--webhook-url" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "simulator" in capsys.readouterr().out


def test_completion_script_and_answers(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in ("bash", "zsh", "fish"):
        assert main(["completion", shell]) == 0
        assert "_WA_CAMPAIGNS_COMPLETE" in capsys.readouterr().out

    def complete(*words: str) -> list[str]:
        """What bash offers for the last word (as its completion function asks)."""
        env = {
            **os.environ,
            "_WA_CAMPAIGNS_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(["wa-campaigns", *words]),
            "COMP_CWORD": str(len(words)),
        }
        done = subprocess.run(CLI, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    assert complete("sta") == ["start", "status"]
    assert complete("contacts", "1", "--state", "inv") == ["invalid_record"]
    assert complete("dev", "") == ["down", "up"]


# --------------------------------------------------------------------------- terminal, pipes


class Terminal:
    """A pseudo-terminal as one stream of a child process; what it shows, read as it comes."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.shown = b""
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        os.close(self.slave)  # the child holds it now; EOF comes when the child ends
        self._reader.start()
        return proc

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the child closed its end
                chunk = b""
            if not chunk:
                return
            self.shown += chunk

    def text(self) -> str:
        self._reader.join(timeout=30)
        os.close(self.master)
        return self.shown.decode()


def test_upload_progress_bar_on_a_terminal_only(
    db: Engine, ingest_process: Child, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("phone\n" + "".join(f"{phone(i)}\n" for i in range(2000)))
    shown = {}
    for flags in ([], ["--json"]):
        campaign_id = str(create_campaign(capsys))
        term = Terminal()
        proc = term.start(
            subprocess.Popen(
                [*CLI, "upload", campaign_id, str(csv_file), *flags],
                stdout=subprocess.PIPE,
                stderr=term.slave,
                cwd=ROOT,
            )
        )
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, term.text()
        shown[bool(flags)] = (out.decode(), term.text())
    human_out, bar = shown[False]
    assert human_out.startswith("upload 1: completed")
    assert "100%" in bar and "2,000 rows  2,000 valid  0 invalid" in bar
    json_out, no_bar = shown[True]
    assert json.loads(json_out)["valid"] == 2000
    assert no_bar == ""


def test_watch_returns_at_once_for_an_ended_campaign(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    campaign_id = str(create_campaign(capsys))
    run(capsys, "cancel", campaign_id, "--json")
    code, final = run(capsys, "status", campaign_id, "--watch", "--json")
    assert (code, final["status"]) == (0, "cancelled")
    assert main(["status", campaign_id, "--watch"]) == 0  # not a terminal: the block once
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"campaign {campaign_id} 'x': cancelled (cancelled by admin)"
    assert sum(line.startswith("campaign ") for line in lines) == 1


def test_watch_redraws_on_a_terminal_until_the_campaign_ends(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    campaign_id = str(campaign_with_contacts(db, [phone(i) for i in range(3)]))
    run(capsys, "start", campaign_id, "--json")
    term = Terminal()
    proc = term.start(
        subprocess.Popen(
            [*CLI, "status", campaign_id, "--watch", "--interval", "0.5"],
            stdout=term.slave,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
    )
    wait_for(lambda: term.shown.count(b"Ctrl-C ends") >= 2, timeout=30, what="two refreshes")
    assert proc.poll() is None  # still watching a running campaign
    run(capsys, "cancel", campaign_id, "--json")
    assert proc.wait(timeout=30) == 0
    shown = term.text()
    assert "running" in shown and "\x1b[" in shown  # redrawn in place
    assert shown.rsplit("\x1b[J", 1)[1].startswith(f"campaign {campaign_id} 'dispatch': cancelled")
    assert proc.stderr is not None and proc.stderr.read() == b""


def test_watch_ends_cleanly_on_ctrl_c(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    campaign_id = str(create_campaign(capsys))
    proc = subprocess.Popen(
        [*CLI, "status", campaign_id, "--watch", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()  # a draft: the watch goes on until interrupted
    assert first == f"campaign {campaign_id} 'x': draft\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, b"")
    assert b"Traceback" not in out


def test_a_closed_pipe_ends_the_export_quietly(db: Engine) -> None:
    # Far more CSV than a pipe buffers (64 KiB), so the export is still writing when
    # `head` has its line and goes away.
    campaign_id = campaign_with_contacts(db, [phone(i) for i in range(3000)])
    export = subprocess.Popen(
        [*CLI, "contacts", str(campaign_id), "--csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert export.stdout is not None and export.stderr is not None
    head = subprocess.run(["head", "-1"], stdin=export.stdout, capture_output=True, timeout=60)
    export.stdout.close()  # only head held the read end; now nobody does
    code = export.wait(timeout=60)
    assert code == 141, export.stderr.read().decode()  # as a shell reports SIGPIPE
    assert head.stdout.decode().startswith("line,phone_raw,phone_e164")
    assert export.stderr.read() == b""


def test_campaign_create_with_named_variables(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, campaign = run(
        capsys,
        "campaign", "create", "--name", "n", "--region", "DE",
        "--variables", "first_name,order_id", "--named-variables", "--json",
    )  # fmt: skip
    assert code == 0
    assert campaign["named_variables"] is True
    assert campaign["body_variables"] == ["first_name", "order_id"]

    code = main(
        ["campaign", "create", "--name", "n", "--region", "DE",
         "--variables", "First Name", "--named-variables"]
    )  # fmt: skip
    assert code != 0
    assert "named variables must be lowercase" in capsys.readouterr().err
