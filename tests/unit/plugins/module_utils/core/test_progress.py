# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""progress.py: the human formatters, the meter's interval logic (an
injected clock), the steps it records, tqdm bars on a stream, and the meters
the pipeline feeds (PipelineSink, read_stored) on a real file backend."""

import io
import sys

import pytest
from ansible_collections.drkit.backup.plugins.module_utils.core import progress as pr
from ansible_collections.drkit.backup.plugins.module_utils.core.errors import ConfigError
from ansible_collections.drkit.backup.plugins.module_utils.core.stream import PipelineSink, ZstdCompress, read_stored
from ansible_collections.drkit.backup.plugins.module_utils.storage.file import FileStorage

MiB = 1 << 20


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def logging_progress(interval=60.0):
    clock, out = Clock(), io.StringIO()
    p = pr.Progress("log", out, interval=interval, clock=clock, wall=lambda fmt: "12:00:00")
    return p, clock, out


# --------------------------------------------------------------------------
# formatters


@pytest.mark.parametrize("n,text", [
    (0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (1288490189, "1.2 GiB"), (5 * (1 << 40), "5.0 TiB"), (3 << 60, "3072.0 PiB"),
])
def test_human_bytes(n, text):
    assert pr.human_bytes(n) == text


@pytest.mark.parametrize("seconds,text", [
    (0, "0 s"), (44.6, "45 s"), (60, "1 min"), (185, "3 min 5 s"), (3600, "1 h"), (7800, "2 h 10 min"),
    (86400 * 3 + 3600 * 4, "3 d 4 h"), (-5, "0 s"),
])
def test_human_duration(seconds, text):
    assert pr.human_duration(seconds) == text


@pytest.mark.parametrize("seconds,text", [
    (0, "just now"), (40, "40 s ago"), (59.9, "59 s ago"), (60, "1 min ago"), (3 * 3600 + 59, "3 h ago"),
    (12 * 86400 + 5, "12 d ago"), (-30, "in the future"),
])
def test_human_age(seconds, text):
    assert pr.human_age(seconds) == text


def test_log_line_with_an_estimate_and_without_a_total():
    line = pr.log_line("upload", "database.pgdump.zst", 600 * MiB, 1000 * MiB, True, 30.0)
    assert line == ("upload database.pgdump.zst: 600.0 MiB of ~1000.0 MiB (estimate, 60%), 20.0 MiB/s, "
                    "about 20 s left")
    assert pr.log_line("download", "base.tar.zst", 10 * MiB, 40 * MiB, False, 5.0) == \
        "download base.tar.zst: 10.0 MiB of 40.0 MiB (25%), 2.0 MiB/s, 15 s left"
    assert pr.log_line("upload", "dump.rdb", 3 * MiB, None, False, 2.0) == "upload dump.rdb: 3.0 MiB, 1.5 MiB/s"


# --------------------------------------------------------------------------
# the interval logic (log mode)


def test_a_line_per_interval_not_per_chunk():
    p, clock, out = logging_progress(interval=60)
    with p.meter("upload", "database.pgdump", total=100 * MiB) as m:
        for _step in range(59):  # a chunk a second for 59 s: nothing yet
            clock.now += 1
            m.update(MiB)
        assert out.getvalue() == ""
        clock.now += 1
        m.update(MiB)  # 60 s: the first line
        assert out.getvalue() == "12:00:00 drkit: upload database.pgdump: 60.0 MiB of 100.0 MiB (60%), " \
                                 "1.0 MiB/s, 40 s left\n"
        for _step in range(30):
            clock.now += 1
            m.update(MiB)
        assert out.getvalue().count("\n") == 1  # the next one is due at 120 s
        clock.now += 35
        m.update(MiB)  # a stalled stream: one line when bytes move again, not one per missed interval
        assert out.getvalue().count("\n") == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[2] == \
        "12:00:00 drkit: upload database.pgdump: done, 91.0 MiB in 2 min 5 s (745.5 KiB/s)"
    assert p.steps() == [{"step": "upload", "what": "database.pgdump", "bytes": 91 * MiB, "seconds": 125.0,
                          "bytes_per_second": int(91 * MiB / 125.0)}]


def test_interval_zero_logs_every_chunk_and_short_steps_log_nothing_at_the_end():
    p, clock, out = logging_progress(interval=0)
    with p.meter("download", "x", total=3) as m:
        for _step in range(3):
            clock.now += 0.5
            m.update(1)
    assert out.getvalue().count("drkit: download x: ") == 3 + 1  # three lines and the end
    p, clock, out = logging_progress(interval=60)
    with p.meter("download", "x", total=3) as m:
        clock.now += 59
        m.update(3)
    assert out.getvalue() == ""  # under a minute: the step's line is not needed
    assert p.steps()[0]["bytes"] == 3 and p.steps()[0]["seconds"] == 59.0


def test_an_estimate_that_falls_short_grows_instead_of_passing_100_percent():
    p, clock, out = logging_progress(interval=0)
    m = p.meter("upload", "database.pgdump.zst", total=10 * MiB, estimate=True)
    clock.now += 1
    m.update(12 * MiB)
    assert m.total > 12 * MiB and "(estimate, 90%)" in out.getvalue()
    m.close()
    exact = p.meter("upload", "x", total=10, estimate=False)
    exact.update(20)
    assert exact.total == 10  # only estimates move


def test_a_failed_step_is_not_recorded_and_says_so():
    p, clock, out = logging_progress(interval=1)
    with pytest.raises(RuntimeError):
        with p.meter("upload", "x") as m:
            clock.now += 2
            m.update(5)
            raise RuntimeError("pg_dump died")
    assert p.steps() == [] and out.getvalue().splitlines()[-1].endswith("upload x: failed, 5 B in 2 s (2 B/s)")


def test_quiet_shows_nothing_and_records_steps():
    clock, out = Clock(), io.StringIO()
    p = pr.Progress("quiet", out, clock=clock)
    p("a message")
    with p.meter("restore", "base.tar.zst", total=4) as m:
        clock.now += 2
        m(b"abcd")  # a meter is also a tap
    assert out.getvalue() == ""
    assert p.steps() == [{"step": "restore", "what": "base.tar.zst", "bytes": 4, "seconds": 2.0,
                          "bytes_per_second": 2}]


def test_zero_seconds_has_no_rate():
    p = pr.Progress("quiet", io.StringIO(), clock=lambda: 5.0)
    with p.meter("re-read", "x") as m:
        m.update(10)
    assert p.steps()[0]["bytes_per_second"] is None


def test_a_plain_callable_gets_a_meter_that_counts_for_nobody():
    said = []
    m = pr.meter(said.append, "upload", "x", total=10, estimate=True)
    with m:
        m.update(20)
    assert m.done == 20 and said == []
    assert pr.meter(None, "upload").closed is False


# --------------------------------------------------------------------------
# choosing the mode, DRKIT_PROGRESS_INTERVAL


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_for_terminal_picks_bars_log_lines_or_nothing():
    assert pr.for_terminal(Tty(), environ={}).mode == "bar"
    log = pr.for_terminal(io.StringIO(), environ={"DRKIT_PROGRESS_INTERVAL": "2.5"})
    assert log.mode == "log" and log.interval == 2.5
    assert pr.for_terminal(io.StringIO(), environ={}).interval == 60
    assert pr.for_terminal(Tty(), quiet=True, environ={}).mode == "quiet"


def test_a_terminal_without_tqdm_gets_log_lines_and_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    out = Tty()
    p = pr.for_terminal(out, environ={})
    assert p.mode == "log"
    assert "note: Progress bars on a terminal need the Python library tqdm" in out.getvalue()
    assert "pip install tqdm" in out.getvalue()


@pytest.mark.parametrize("value", ["abc", "-1", "1,5"])
def test_a_bad_interval_names_the_variable(value):
    with pytest.raises(ConfigError) as e:
        pr.interval_from_env({"DRKIT_PROGRESS_INTERVAL": value})
    assert "DRKIT_PROGRESS_INTERVAL must be a number of seconds" in str(e.value)
    assert "DRKIT_PROGRESS_INTERVAL" in e.value.hint


def test_bars_show_bytes_rate_and_estimate_on_the_stream():
    out = Tty()
    p = pr.Progress("bar", out, interval=60)
    with p.meter("upload", "database.pgdump.zst", total=8 * MiB, estimate=True) as m:
        for _step in range(4):
            m.update(MiB)
        p("a message above the bar")
    with p.meter("re-read", "database.pgdump.zst", total=4 * MiB) as m:
        m.update(4 * MiB)
    text = out.getvalue()
    assert "upload database.pgdump.zst (estimate)" in text
    assert "re-read database.pgdump.zst: 100%" in text
    assert "4.00M/4.00M" in text and "B/s" in text
    assert "drkit: a message above the bar" in text
    assert [s["step"] for s in p.steps()] == ["upload", "re-read"]


# --------------------------------------------------------------------------
# what the pipeline feeds


def test_the_sink_counts_what_the_producer_wrote_and_read_stored_what_is_stored(tmp_path):
    fs = FileStorage(str(tmp_path))
    data = b"drkit " * (300 * 1024)
    p = pr.Progress("quiet", io.StringIO())
    with p.meter("upload", "k") as m:
        with fs.writer("k") as w:
            sink = PipelineSink(w, [ZstdCompress()], meter=m)
            for i in range(0, len(data), 65536):
                sink.write(data[i:i + 65536])
            sink.close()
    res = sink.result()
    with p.meter("re-read", "k", total=res["size"]) as m:
        read_stored(fs, "k", res["size"], res["sha256"], meter=m)
    up, back = p.steps()
    assert up["bytes"] == len(data) == res["raw_size"]
    assert back["bytes"] == res["size"] < len(data)


def test_directory_growth_counts_what_a_tool_writes_into_a_directory(tmp_path):
    """pg_dump -Fd writes its files itself: the meter follows the directory."""
    out = tmp_path / "dump"
    p = pr.Progress("quiet", io.StringIO())
    with p.meter("dump", "pg_dump -Fd", total=1000, estimate=True) as m:
        growth = pr.DirectoryGrowth(str(out), m, every=3600)  # polled by hand here, not by its thread
        growth.poll()
        assert m.done == 0  # the directory does not exist yet
        out.mkdir()
        (out / "toc.dat").write_bytes(b"t" * 100)
        (out / "3001.dat").write_bytes(b"d" * 300)
        growth.poll()
        assert m.done == 400
        with open(str(out / "3001.dat"), "ab") as fh:
            fh.write(b"d" * 50)
        (out / "sub").mkdir()  # not a file: not counted
        growth.poll()
        assert m.done == 450
        with growth:  # and once more at the end
            (out / "3002.dat").write_bytes(b"e" * 25)
    assert p.steps()[0]["bytes"] == 475
