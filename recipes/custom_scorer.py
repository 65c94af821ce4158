"""Compose continuous rerouting with best-of-N under a scorer of your own (here: prefer short answers).

    python recipes/custom_scorer.py MODEL_DIR_OR_HUB_ID problems.jsonl
"""
import sys

from ttscale import BestOfN, RerouteConfig, RerouteGenerator, Sampling, Strategy, load_backend, load_task


class Brevity:
    name = "brevity"

    def score(self, branches, problem, task):
        return [-len(b.text) for b in branches]


model, task_file = sys.argv[1:3]
backend, task = load_backend("hf", model), load_task(task_file)
search = BestOfN(BestOfN.Params(temperature=0.8), n=4, sampling=Sampling(max_new_tokens=48), scorer=Brevity())
strategy = Strategy(RerouteGenerator(RerouteConfig(lr=0.05, steps=5)), search)
problems = task.load(limit=3)
for problem, outcome in zip(problems, strategy.solve_all(problems, task, backend)):
    print(problem.id, repr(outcome.prediction), outcome.scores)
