"""What every bad-input check expects of the command line: exit code 2 and one `error:` line."""


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
