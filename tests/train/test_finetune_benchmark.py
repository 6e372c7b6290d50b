"""The fine-tuning benchmark's data and summary: real, imbalanced and reproducible, so its figures can be."""

from __future__ import annotations

from collections import Counter


def test_the_benchmark_data_are_a_thousand_imbalanced_sentences_and_the_same_every_time(
    benchmark_script,
) -> None:
    bench = benchmark_script("finetune")
    rows = bench.docstrings()
    counts = Counter(r["label"] for r in rows)
    assert len(rows) >= 1000 and set(counts) == set(bench.GROUPS)
    assert max(counts.values()) > 2 * min(counts.values())
    assert rows == bench.docstrings() and len({r["text"] for r in rows}) == len(rows)


def test_the_summary_is_a_median_with_its_spread(benchmark_script) -> None:
    bench = benchmark_script("finetune")
    runs = [{"ratios": {"speed": v}} for v in (2.0, 1.5, 3.0)]
    assert bench.summary(runs) == {"speed": {"median": 2.0, "min": 1.5, "max": 3.0}}
