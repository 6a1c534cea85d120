"""`rlhf pipeline`: SFT -> candidates -> feedback -> reward model -> PPO -> evaluation -> report.

    from rlhf.pipeline.config import PipelineConfig
    from rlhf.pipeline.run import run_pipeline

The package itself imports nothing: importing one of its modules loads only what that one needs.
"""
