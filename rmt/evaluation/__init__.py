"""rmt.evaluation: evaluate any model on BABILong and report (see docs/evaluation.md).

    from rmt.evaluation.evaluate import evaluate, load_records_for_eval, load_runner
    from rmt.evaluation.report import load_table, format_markdown, save_heatmap

Modules: ``base`` (runner interface, local-model plumbing), ``hf`` (HF causal LMs), ``rmt_runner``
(RMT checkpoints), ``endpoint`` (OpenAI-compatible endpoints), ``rag`` (retrieval baseline),
``prompting`` (adapter to ``rmt.babilong.prompts``), ``store`` (SQLite results), ``evaluate``
(orchestration, data sources), ``report`` (tables, heatmap). Heavy libraries are imported lazily.
"""
