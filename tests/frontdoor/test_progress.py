"""Progress lines: nothing for quick stages, a complete line for slow ones, never a line left
open under an error."""
import io
import time

import pytest

from pcformer.progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_quick_stages_print_nothing_slow_ones_a_whole_line():
    out = io.StringIO()
    with Progress("mpcformer", stream=out, delay=0.05) as p:
        p.stage("trace")                 # quick
        p.stage("simulate")
        p.detail("10/20 steps")
        time.sleep(0.1)                  # slow
        p.done()
    lines = out.getvalue().splitlines(keepends=True)
    assert len(lines) == 1 and lines[0].endswith("\n")
    assert lines[0].startswith("mpcformer: simulate  ") and "(10/20 steps)" in lines[0]


def test_an_error_starts_on_a_fresh_line_on_a_terminal():
    out = Tty()
    with pytest.raises(RuntimeError):
        with Progress("exact", stream=out, delay=0.0) as p:
            p.stage("simulate")
            time.sleep(0.7)              # the live line is drawn (every 0.5 s)
            raise RuntimeError("boom")
    text = out.getvalue()
    assert "\rexact: simulate ..." in text and text.endswith("\n")
