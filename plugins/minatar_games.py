"""MinAtar games (Young & Tian 2019; the ``minatar`` package): five miniature Atari games with 10x10xC boolean
image observations, as one task family each: ``minatar-breakout``, ``minatar-asterix``, ``minatar-freeway``,
``minatar-seaquest`` and ``minatar-spaceinvaders``.

Context (MinAtar's own constructor arguments): ``sticky_action_prob`` (the probability that the previous action
is repeated instead of the chosen one; MinAtar's default 0.1) and, in the games that ramp (Asterix, Seaquest,
Space Invaders), ``difficulty_ramping`` (1: the game speeds up as it goes, MinAtar's default; 0: it does not). Episodes are cut at :data:`MAX_EPISODE_STEPS` steps (MinAtar
sets no limit). Importing this module registers MinAtar's gymnasium ids (``MinAtar/Breakout-v1``, ...; v1 = the
minimal action set), so plain ids work everywhere a task id does.

Networks: the SB3 runner gives image observations MinAtar's reference Q-network (one 3x3 convolution with 16
channels, 128 hidden units; :class:`hypermeta.networks.MinAtarCNN`); the batched engine has no CNN, so MinAtar
runs use ``--runner sb3``.

Reference returns (what scores 1.0): MinAtar publishes learning curves, not a solved threshold, so
:data:`REFERENCE_RETURNS` are hypermeta's own measurement: the mean final return of the base configuration
(with the CNN) at the family's documented budget, ``studies/reports/minatar/reference.md``. They put the games
on one scale; they are not comparable with MinAtar's 5M-frame results.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping

import gymnasium as gym

from hypermeta import ContextParam, TaskFamily

GAMES = ("breakout", "asterix", "freeway", "seaquest", "space_invaders")
#: the games whose ``ramping`` argument does something (Breakout and Freeway ignore it)
RAMPING_GAMES = ("asterix", "seaquest", "space_invaders")
STICKY = ContextParam(0.1, 0.0, 0.25, "probability that the previous action repeats", hard_low=0.0, hard_high=1.0)
RAMPING = ContextParam(1.0, 0.0, 1.0, "1: the game speeds up over time, 0: it does not (rounded to 0 or 1)",
                       hard_low=0.0, hard_high=1.0)
MAX_EPISODE_STEPS = 2_500  # Freeway ends itself after 2,500 steps; the others end when the agent loses


def register_minatar() -> None:
    """Register MinAtar's gymnasium ids once (``minatar.gym.register_envs``), without its seaborn warning."""
    if "MinAtar/Breakout-v1" in gym.registry:
        return
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)  # minatar.gym warns at import when seaborn (pixel rendering) is missing
    try:
        from minatar.gym import register_envs
    finally:
        logging.disable(level)
    register_envs()


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
