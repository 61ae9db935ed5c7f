"""Modality attribution from the `subsets` family.

The game: players are the modalities, v(S) is the test metric of the model trained on the
subset S (v of the empty set is the metric of the training label prior, what a model that
sees nothing can do). Its exact Shapley value (Shapley, 1953) is each modality's share of
v(all) - v(empty):

    phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S))

and the pairwise Shapley interaction index (Grabisch & Roubens, 1999) measures synergy
(> 0: the pair is worth more together than apart) or redundancy (< 0):

    I_ij = sum over S holding neither of |S|! (n - |S| - 2)! / (n - 1)! *
           (v(S + i + j) - v(S + i) - v(S + j) + v(S))

Both are linear in v, so their mean over seeds is the value of the mean game; the
per-seed values give the spread and the interval.
"""

from __future__ import annotations

from itertools import combinations
from math import factorial
from typing import Callable, Sequence

Game = Callable[[frozenset], float]


def all_subsets(items: Sequence[str]):
    for k in range(len(items) + 1):
        for c in combinations(items, k):
            yield frozenset(c)


def shapley(players: Sequence[str], v: Game) -> dict[str, float]:
    n = len(players)
    out = {}
    for i in players:
        others = [p for p in players if p != i]
        out[i] = sum(factorial(len(s)) * factorial(n - len(s) - 1) / factorial(n) * (v(s | {i}) - v(s))
                     for s in all_subsets(others))
    return out


def interactions(players: Sequence[str], v: Game) -> dict[tuple[str, str], float]:
    n = len(players)
    out = {}
    for i, j in combinations(players, 2):
        others = [p for p in players if p not in (i, j)]
        out[(i, j)] = sum(factorial(len(s)) * factorial(n - len(s) - 2) / factorial(n - 1)
                          * (v(s | {i, j}) - v(s | {i}) - v(s | {j}) + v(s)) for s in all_subsets(others))
    return out


def pair_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}+{pair[1]}"
