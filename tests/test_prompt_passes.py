"""benchmarks.prompt_passes: the wall time the scores jobs' prompt passes cover, from their logs."""

from benchmarks.prompt_passes import pass_intervals, union_seconds


def test_passes_are_read_from_logs_and_overlaps_counted_once(tmp_path):
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "a.log").write_text(
        "2026-12-04 02:27:02,500 INFO one prompt pass: 10.0 s, of which 2.0 s continuing 5 answers of 9\n"
    )
    (tmp_path / "scores" / "b.log").write_text(
        "2026-12-04 02:27:00,000 INFO loading\n"
        "2026-12-04 02:27:06,000 INFO one prompt pass: 5.5 s, of which 1.0 s continuing 1 answers of 9\n"
        "2026-12-04 02:28:00,000 INFO one prompt pass: 4.0 s, of which 0.0 s continuing 0 answers of 9\n"
    )
    passes = pass_intervals(tmp_path)
    assert [round(e - s, 1) for s, e in passes] == [10.0, 5.5, 4.0]
    assert round(passes[1][1] - passes[0][1], 1) == 3.5  # milliseconds of the time stamps kept
    assert round(union_seconds(passes), 1) == 13.5 + 4.0  # 02:26:52.5-02:27:06, 02:27:56-02:28:00
    assert union_seconds([]) == 0.0
