"""cruise.logs: structlog set up for console or JSON lines."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest

from cruise import logs

pytestmark = pytest.mark.timeout(30)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    logs.configure()  # back to the default: console on stderr


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_json_is_one_object_per_line_with_bound_fields():
    buf = io.StringIO()
    logs.configure("json", "info", buf)
    log = logs.get_logger(node="n1")
    log.info("elected", term=3)
    log.warning("slow fsync", ms=12.5, data=b"\x00\x01")
    log.bind(peer="n2").error("peer unreachable\nsecond line")
    out = lines(buf)
    assert len(out) == 3
    records = [json.loads(line) for line in out]
    first = records[0]
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["event"] == "elected"
    assert first["level"] == "info"
    assert first["node"] == "n1"
    assert first["term"] == 3
    datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert records[1]["level"] == "warning"
    assert records[1]["data"] == repr(b"\x00\x01")  # not JSON: rendered, never a crash
    assert records[2] == {**records[2], "level": "error", "node": "n1", "peer": "n2"}


def test_json_exception_stays_on_one_line():
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    log = logs.get_logger()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("apply failed", index=9)
    (line,) = lines(buf)
    record = json.loads(line)
    assert record["level"] == "error"
    assert "RuntimeError: boom" in record["exception"]


def test_level_filters_below_it():
    buf = io.StringIO()
    logs.configure("json", "warning", buf)
    log = logs.get_logger(node="n3")
    log.debug("noise")
    log.info("noise")
    log.warning("kept")
    assert [json.loads(line)["event"] for line in lines(buf)] == ["kept"]


def test_console_mode_is_human_readable_without_colors_off_a_tty():
    buf = io.StringIO()
    logs.configure("console", "debug", buf)
    logs.get_logger(node="n1").debug("tick", elapsed=3)
    (line,) = lines(buf)
    assert "tick" in line
    assert "node=n1" in line
    assert "elapsed=3" in line
    assert "\x1b[" not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_console_uses_colors_on_a_tty():
    tty = FakeTTY()
    logs.configure("console", "info", tty)
    logs.get_logger().info("hello")
    assert "\x1b[" in tty.getvalue()


def test_auto_means_console():
    buf = io.StringIO()
    logs.configure("auto", "info", buf)
    logs.get_logger(node="n2").info("started")
    assert "node=n2" in buf.getvalue()


def test_configure_twice_switches_format_and_stream_of_existing_loggers():
    log = logs.get_logger(node="n1")
    first, second = io.StringIO(), io.StringIO()
    logs.configure("console", "info", first)
    log.info("one")
    logs.configure("json", "info", second)
    logs.configure("json", "info", second)  # idempotent
    log.info("two")
    assert "one" in first.getvalue()
    assert "two" not in first.getvalue()
    (line,) = lines(second)
    assert json.loads(line)["event"] == "two"
    assert json.loads(line)["node"] == "n1"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        logs.configure("xml")
    with pytest.raises(ValueError):
        logs.configure("json", "loud")


def test_warn_is_an_alias():
    buf = io.StringIO()
    logs.configure("json", "WARN", buf)
    log = logs.get_logger()
    log.info("dropped")
    log.error("kept")
    assert [json.loads(line)["event"] for line in lines(buf)] == ["kept"]


def test_an_embedded_node_leaves_the_hosts_logging_alone(tmp_path):
    """A library leaves its host alone: building a Node must not reconfigure structlog, so an
    embedding program's own processors (say, JSON for its log shipper) keep applying."""
    import structlog

    from brokerless.testing import free_tcp_addresses
    from cruise import Node

    addrs = iter(free_tcp_addresses(3))
    cfg = tmp_path / "one.yaml"
    cfg.write_text(
        f'members:\n  - {{id: n1, raft: "{next(addrs)}", client: "{next(addrs)}", publish: "{next(addrs)}"}}\n'
        f'data_dir: "{tmp_path}/data"\n'
    )
    seen = []

    def capture(logger, name, event):
        seen.append(event)
        raise structlog.DropEvent

    structlog.configure(processors=[capture])
    try:
        before = structlog.get_config()
        node = Node.from_config(cfg, id="n1")
        node.start()
        node.stop()
        assert structlog.get_config() == before
        assert any(e.get("event") == "member_started" for e in seen), seen
    finally:
        structlog.reset_defaults()
