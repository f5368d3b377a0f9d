"""benchmarks.pass_timeline: the prompt pass's calls timed where their callers look them up."""

from types import SimpleNamespace

import mlx.core as mx
import numpy as np

from benchmarks import pass_timeline
from compbias.inference import scoring


def test_recording_times_the_pass_calls_and_puts_them_back():
    before = scoring.host_logits, scoring.distribution_rows, scoring.logits_at
    batch = SimpleNamespace(idx=np.arange(3), logits=mx.zeros((3, 5)))
    with pass_timeline.recording() as events:
        out = scoring.host_logits(batch)
    assert (scoring.host_logits, scoring.distribution_rows, scoring.logits_at) == before
    assert out.shape == (3, 5)
    assert [(kind, rows) for kind, _, _, rows in events] == [("wait", 3)]
    assert events[0][1] <= events[0][2]
