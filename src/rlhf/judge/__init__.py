"""LLM judges: a generative model asked which of two answers is better, through a prompt template
with a rubric, served by any OpenAI-compatible chat-completions endpoint (a hosted API, or `vllm
serve` on a local model). Position bias is controlled by asking both orders; a reply that cannot be
read is an abstention, never a guess; requests run concurrently, retried, cached on disk.

    judge = PairwiseJudge(JudgeConfig(url="http://127.0.0.1:8000/v1", model_name="judge"))
    verdicts = judge.compare(prompts, answers_a, answers_b)   # one Verdict per pair
"""

from rlhf.judge.config import JudgeConfig
from rlhf.judge.pairwise import PairwiseJudge, Verdict, verdict_counts

__all__ = ["JudgeConfig", "PairwiseJudge", "Verdict", "verdict_counts"]
