"""MinAtar games (Young & Tian 2019; the ``minatar`` package): five miniature Atari games with 10x10xC boolean
image observations, as one task family each: ``minatar-breakout``, ``minatar-asterix``, ``minatar-freeway``,
``minatar-seaquest`` and ``minatar-spaceinvaders``.

Context (MinAtar's own constructor arguments): ``sticky_action_prob`` (the probability that the previous action
is repeated instead of the chosen one; MinAtar's default 0.1) and, in the games that ramp (Asterix, Seaquest,
Space Invaders), ``difficulty_ramping`` (1: the game speeds up as it goes, MinAtar's default; 0: it does not).
Episodes are cut at :data:`MAX_EPISODE_STEPS` steps (MinAtar sets no limit). Importing this module registers
MinAtar's gymnasium ids (``MinAtar/Breakout-v1``, ...; v1 = the minimal action set) with that limit, so plain
ids work everywhere a task id does.

Networks: the SB3 runner gives image observations MinAtar's reference Q-network (one 3x3 convolution with 16
channels, 128 hidden units; :class:`hypermeta.networks.MinAtarCNN`); the batched engine trains the same network
(same seeds, same actions and weights up to rounding), so ``--runner sb3`` and ``--runner batched`` both run.
The engine's MinAtar learning curves are not validated against SB3's (``studies/reports/engine/minatar/
fidelity.md`` misses one of its two targets): hypermeta's MinAtar results use the SB3 runner.

Reference returns (what scores 1.0): MinAtar publishes learning curves, not a solved threshold, so
:data:`REFERENCE_RETURNS` are hypermeta's own measurement (``hypermeta bench minatar --timesteps 100000 --seeds
3``, ``studies/reports/minatar/reference.md``): the mean final return of the base configuration with the CNN
after 100,000 steps. They put the games on one scale; they are not comparable with MinAtar's 5M-frame results.
Seaquest has none: the base configuration does not beat the random policy there at that budget (it scored 0),
so normalising Seaquest needs an explicit ``--reference``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import gymnasium as gym

from hypermeta import ContextParam, TaskFamily

GAMES = ("breakout", "asterix", "freeway", "seaquest", "space_invaders")
#: the base configuration's mean final return at 100,000 steps (3 reference seeds), where it beats random
REFERENCE_RETURNS = {"breakout": 6.333333333333333, "asterix": 1.3333333333333333, "freeway": 45.666666666666664,
                     "space_invaders": 28.866666666666664}
#: the games whose ``ramping`` argument does something (Breakout and Freeway ignore it)
RAMPING_GAMES = ("asterix", "seaquest", "space_invaders")
STICKY = ContextParam(0.1, 0.0, 0.25, "probability that the previous action repeats", hard_low=0.0, hard_high=1.0)
RAMPING = ContextParam(1.0, 0.0, 1.0, "1: the game speeds up over time, 0: it does not (rounded to 0 or 1)",
                       hard_low=0.0, hard_high=1.0)
MAX_EPISODE_STEPS = 2_500  # Freeway ends itself after 2,500 steps; the others end when the agent loses


def register_minatar() -> None:
    """Register MinAtar's gymnasium ids (``MinAtar/<Game>-v0``, and ``-v1`` with the minimal action set) as
    ``minatar.gym.register_envs`` does, plus a time limit of :data:`MAX_EPISODE_STEPS` steps: without one a
    greedy agent that keeps the Breakout ball in play without scoring never ends its evaluation episode. Ids
    registered before (``import minatar.gym`` first) are left as they are."""
    for game in GAMES:
        name = game.title().replace("_", "")
        for version, minimal in (("v0", False), ("v1", True)):
            env_id = f"MinAtar/{name}-{version}"
            if env_id not in gym.registry:
                gym.register(id=env_id, entry_point="minatar.gym:BaseEnv", max_episode_steps=MAX_EPISODE_STEPS,
                             kwargs={"game": game, "use_minimal_action_set": minimal})


class MinAtarFamily(TaskFamily):
    """One MinAtar game with its sticky-action probability and difficulty ramping as context."""

    game: ClassVar[str]
    #: the mean final return of the base configuration at ``budget`` steps (see the module docstring)
    reference_return: ClassVar[float | None] = None
    context_space = {"sticky_action_prob": STICKY}

    def make_env(self, context: Mapping[str, Any] | None = None, **make_kwargs: Any) -> gym.Env:
        ctx = self.validate_context(context or {})
        register_minatar()
        make_kwargs.setdefault("max_episode_steps", MAX_EPISODE_STEPS)
        if "difficulty_ramping" in ctx:
            make_kwargs["difficulty_ramping"] = bool(round(ctx["difficulty_ramping"]))
        return gym.make(self.env_id, sticky_action_prob=ctx["sticky_action_prob"], **make_kwargs)


def _family(game: str) -> type[MinAtarFamily]:
    title = game.title().replace("_", "")
    return type(f"MinAtar{title}Family", (MinAtarFamily,), {
        "name": f"minatar-{game.replace('_', '')}", "game": game, "env_id": f"MinAtar/{title}-v1",
        "reference_return": REFERENCE_RETURNS.get(game),
        "description": f"MinAtar {title} (10x10 boolean image observations), at most {MAX_EPISODE_STEPS} steps.",
        "__doc__": f"MinAtar {title} with its sticky-action probability"
                   + (" and difficulty ramping" if game in RAMPING_GAMES else "") + " as context.",
        "context_space": {"sticky_action_prob": STICKY, **({"difficulty_ramping": RAMPING} if game in RAMPING_GAMES
                                                            else {})},
        "__module__": __name__})


def minatar_families() -> list[TaskFamily]:
    """The entry point: one family per game (registering MinAtar's gymnasium ids on the way)."""
    register_minatar()
    return [_family(game)() for game in GAMES]
