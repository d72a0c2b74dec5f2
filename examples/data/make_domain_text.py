"""Unlabelled domain text for task-specific distillation, generated (no download).

Sentences of an IT-operations / customer-support domain, built from templates and word lists
with a seeded generator, so the same seed always writes the same file:

    python examples/data/make_domain_text.py examples/data

writes domain-train.jsonl (2000 lines, for training) and domain-heldout.jsonl (300 other
lines, for evaluation). Each line is {"text": ...}; there are no labels: in task-specific
distillation the teacher's embeddings are the only targets.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SUBJECTS = [
    "the payment service",
    "our checkout page",
    "the login form",
    "the nightly backup job",
    "the mobile app",
    "the search index",
    "the billing database",
    "the load balancer",
    "the invoice export",
    "the image upload",
    "the recommendation model",
    "the VPN gateway",
    "the staging cluster",
    "the customer portal",
    "the email relay",
    "the cache layer",
    "the data pipeline",
    "the API gateway",
    "the support chat",
    "the order history page",
]
PROBLEMS = [
    "times out after a few seconds",
    "returns a 502 error",
    "is much slower than yesterday",
    "crashes on startup",
    "shows the wrong currency",
    "keeps logging users out",
    "fails when the file is larger than 10 MB",
    "stopped sending notifications",
    "uses all the memory on the node",
    "drops requests during deploys",
    "reports stale numbers",
    "rejects valid passwords",
    "hangs while loading",
    "double-charges some customers",
    "loses the shopping cart",
    "cannot reach the database",
]
WHENS = [
    "since this morning",
    "after the last release",
    "only on weekends",
    "for some users in Europe",
    "every hour or so",
    "when traffic peaks",
    "on older Android phones",
    "since the upgrade",
    "right after midnight",
    "intermittently",
    "for new accounts",
    "under heavy load",
]
ACTIONS = [
    "rolled back the release",
    "restarted the pods",
    "increased the connection pool",
    "added an index",
    "rotated the certificates",
    "cleared the cache",
    "scaled out the workers",
    "opened a ticket with the vendor",
    "raised the memory limit",
    "disabled the feature flag",
    "replayed the failed messages",
    "patched the retry logic",
]
RESULTS = [
    "which fixed it",
    "but the problem came back",
    "and latency is back to normal",
    "and we are monitoring it",
    "which did not help",
    "and errors dropped to zero",
    "so customers can pay again",
    "but some data still looks wrong",
]
QUESTIONS = [
    "How do I reset my password?",
    "Why was I charged twice this month?",
    "Can I export my invoices as CSV?",
    "Where can I see the status of my order?",
    "How do I add a second user to my account?",
    "Is there an API for bulk uploads?",
    "Why does the app ask me to log in again?",
    "How long are backups kept?",
    "Can I change the billing currency?",
    "What does error 502 mean?",
    "How do I enable two-factor authentication?",
    "Why is the dashboard empty?",
]
TEMPLATES = [
    "{subject} {problem} {when}.",
    "Customers say {subject} {problem} {when}.",
    "Heads up: {subject} {problem}; we {action} {result}.",
    "We {action} on {subject} {result}.",
    "Incident report: {subject} {problem} {when}, so we {action}.",
    "{question}",
    "{question} My issue is that {subject} {problem}.",
    "Is it expected that {subject} {problem} {when}?",
]


def sentences(count: int, seed: int = 0) -> list[str]:
    """`count` distinct sentences (fewer if the templates run out), reproducibly."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    for _ in range(count * 20):
        if len(seen) >= count:
            break
        text = rng.choice(TEMPLATES).format(
            subject=rng.choice(SUBJECTS),
            problem=rng.choice(PROBLEMS),
            when=rng.choice(WHENS),
            action=rng.choice(ACTIONS),
            result=rng.choice(RESULTS),
            question=rng.choice(QUESTIONS),
        )
        seen[text[0].upper() + text[1:]] = None
    return list(seen)


def write(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


def write_split(folder: Path, train: int, heldout: int, seed: int = 0) -> tuple[Path, Path]:
    """domain-train.jsonl and domain-heldout.jsonl: no held-out sentence is also in training."""
    training = sentences(train, seed)
    seen = set(training)
    others = [t for t in sentences(train + heldout, seed + 1) if t not in seen][:heldout]
    return (
        write(folder / "domain-train.jsonl", training),
        write(folder / "domain-heldout.jsonl", others),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--heldout", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_split(args.folder, args.train, args.heldout, args.seed)


if __name__ == "__main__":
    main()
