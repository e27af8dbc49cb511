"""recircuit.errors: one line, the right exit status."""

from recircuit.errors import InputError, RunFailed, report_error


def test_report_error_input_error_is_status_2_one_line(capsys):
    err = InputError("has 3 columns", path="data.csv", line=7, fix="use 4")
    assert report_error("prog.py", err) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "prog.py: error: data.csv:7: has 3 columns; use 4\n"


def test_report_error_run_failed_is_status_1():
    assert report_error("prog.py", RunFailed("diverged")) == 1
