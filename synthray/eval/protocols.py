"""Evaluation protocols: which classes the index holds, which are zero-shot, which is real.

After the thesis's experiment settings (``../shared/seeds/001_*``, sections 3.3.2 and 3.5)
and GenImage's standard protocol (train on SD1.4 + real, test on every generator):

- ``ES1``: the encoder trained on generators only; real is its zero-shot class.
- ``ES2``: all generators + real trained; every test class is seen.
- ``ES3``: one generator + real trained; tested on every generator in the test split.
- ``ES4``: named generators held out of training: zero-shot test classes.
- ``sd14``: ES3 with GenImage's names: SD1.4 + real trained, tested on GenImage's generators.
- ``custom``: explicit indexed and zero-shot lists.
- ``auto``: the protocol of the checkpoint's own training setting.

A protocol is resolved against the checkpoint (the classes it trained on, the ones it
held out) and the classes present in the shards. Three sets come out:

- ``indexed``: classes with references in the vector index (the kNN can answer them).
  Real is always indexed when the test split has real images: the is-AI score is the
  share of non-real neighbours, so it needs real references even where the encoder never
  saw a real image (thesis ES1; its kNN also held real references).
- ``zero_shot``: test classes the encoder never trained on (the thesis's zero-shot split
  of precision/recall/F1).
- ``novel``: test classes with no references in the index; the right open-set answer
  for their images is "unknown".
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Sequence

from synthray.data.generators import normalize_generator
from synthray.data.schema import REAL
from synthray.eval.config import ProtocolConfig
from synthray.registry import Registry

#: GenImage's eight generators, canonical spellings (``synthray.data.generators``).
GENIMAGE_GENERATORS = ("ADM", "BigGAN", "GLIDE", "Midjourney", "VQDM", "SD1.4", "SD1.5", "Wukong")


class ProtocolError(ValueError):
    """A protocol that cannot be evaluated with this checkpoint and these shards."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a protocol needs to know about a checkpoint."""

    trained: tuple[str, ...]  # classes the encoder trained on
    held_out: tuple[str, ...] = ()  # generators its run held out on purpose
    setting: str = "ES2"  # its experiment setting (ES1..ES4[.x] | custom)
    generator: str | None = None  # ES3: its one generator

    @classmethod
    def from_embedder(cls, embedder) -> "CheckpointInfo":
        exp = embedder.train_config.experiment
        return cls(
            trained=tuple(embedder.classes),
            held_out=tuple(embedder.held_out),
            setting=exp.setting,
            generator=exp.generator,
        )


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A resolved protocol (every list sorted, ``real`` first)."""

    name: str
    indexed: tuple[str, ...]  # classes with references in the index
    zero_shot: tuple[str, ...]  # test classes the encoder never trained on
    novel: tuple[str, ...]  # test classes absent from the index: open-set truth is "unknown"
    real: str | None  # the real class when the test split has one (detection metrics need it)
    ignored: tuple[str, ...] = ()  # classes in the test split this protocol leaves out
    notes: tuple[str, ...] = ()  # what the resolution had to decide (for the report)

    @property
    def test_classes(self) -> tuple[str, ...]:
        return _ordered(set(self.indexed) | set(self.novel))

    @property
    def seen(self) -> tuple[str, ...]:
        """Test classes the encoder trained on."""
        return tuple(c for c in self.test_classes if c not in self.zero_shot)

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d["test_classes"], d["seen"] = list(self.test_classes), list(self.seen)
        return d


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names), key=lambda c: (c != REAL, c)))


@dataclasses.dataclass
class _Rule:
    """What a protocol rule decides: the test classes, the indexed ones, notes for the report."""

    test: list[str]
    indexed: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)


#: A protocol rule: (config, checkpoint, classes with test images, every class name known from the
#: shards and the checkpoint) -> :class:`_Rule`.
ProtocolRule = Callable[[ProtocolConfig, CheckpointInfo, Sequence[str], set[str]], _Rule]
PROTOCOLS: Registry[ProtocolRule] = Registry("protocol")


def list_protocols() -> list[str]:
    """Every registered protocol name (``auto`` resolves to one of them)."""
    return PROTOCOLS.names()


def _canonical(names: Iterable[str], known: Iterable[str], what: str) -> list[str]:
    """Config spellings -> the shards' class names (aliases such as ``sdv4`` allowed).

    Raises:
        ProtocolError: a name that is neither in the shards nor among the checkpoint's classes.
    """
    known = sorted(set(known))
    out = []
    for name in names:
        canon = normalize_generator(str(name))
        if canon not in known:
            raise ProtocolError(f"unknown class {name!r} in {what}; classes in the shards and the checkpoint: {known}")
        out.append(canon)
    return out


def _standard(test: Sequence[str], ck: CheckpointInfo, notes: Sequence[str] = ()) -> _Rule:
    """The usual index: what the encoder trained on, plus real (see the module docstring)."""
    test = list(dict.fromkeys(test))
    return _Rule(test=test, indexed=[c for c in test if c in ck.trained or c == REAL], notes=list(notes))


@PROTOCOLS.register("ES1")
def _es1(cfg: ProtocolConfig, ck: CheckpointInfo, present: Sequence[str], known: set[str]) -> _Rule:
    if REAL in ck.trained:
        raise ProtocolError(
            "ES1 evaluates an encoder trained on generators only, but this checkpoint trained on "
            f"{REAL!r} (classes {list(ck.trained)}); use ES2 or ES4"
        )
    if REAL not in present:
        raise ProtocolError(f"ES1 tests real images as the zero-shot class, but the test split has no {REAL!r} images")
    return _standard([*ck.trained, REAL], ck)


@PROTOCOLS.register("ES2")
def _es2(cfg: ProtocolConfig, ck: CheckpointInfo, present: Sequence[str], known: set[str]) -> _Rule:
    if REAL not in ck.trained:
        raise ProtocolError(
            f"ES2 evaluates an encoder trained on generators + {REAL!r}, but this checkpoint has no "
            f"{REAL!r} class (classes {list(ck.trained)}); use ES1"
        )
    return _standard(ck.trained, ck)


def _check_one_generator(name: str, generator: str, ck: CheckpointInfo) -> None:
    expected = {REAL, generator}
    if set(ck.trained) != expected:
        raise ProtocolError(
            f"{name} evaluates an encoder trained on {sorted(expected)} only, but this checkpoint "
            f"trained on {list(ck.trained)}"
        )


@PROTOCOLS.register("ES3")
def _es3(cfg: ProtocolConfig, ck: CheckpointInfo, present: Sequence[str], known: set[str]) -> _Rule:
    generator = cfg.generator or ck.generator or next((c for c in ck.trained if c != REAL), None)
    if generator is None:
        raise ProtocolError("ES3 needs protocol.generator (the one generator trained with real)")
    (generator,) = _canonical([generator], known, "ES3 protocol.generator")
    _check_one_generator("ES3", generator, ck)
    others = [c for c in present if c not in (REAL, generator)]
    if not others:
        raise ProtocolError(f"ES3 tests on generators other than {generator!r}, but the test split has none")
    return _standard([REAL, generator, *others], ck)


@PROTOCOLS.register("sd14")
def _sd14(cfg: ProtocolConfig, ck: CheckpointInfo, present: Sequence[str], known: set[str]) -> _Rule:
    _check_one_generator("sd14", "SD1.4", ck)
    others = [g for g in GENIMAGE_GENERATORS if g != "SD1.4" and g in present]
    if not others:
        raise ProtocolError(
            f"sd14 tests on GenImage's other generators {list(GENIMAGE_GENERATORS)}, but the test "
            f"split has none of them (classes found: {sorted(present)})"
        )
    missing = [g for g in GENIMAGE_GENERATORS if g not in present]
    notes = [f"GenImage generators missing from the test split: {missing}"] if missing else []
    return _standard([REAL, "SD1.4", *others], ck, notes)


@PROTOCOLS.register("ES4")
def _es4(cfg: ProtocolConfig, ck: CheckpointInfo, present: Sequence[str], known: set[str]) -> _Rule:
    held = list(cfg.held_out) or list(ck.held_out)
    if not held:
        raise ProtocolError("ES4 needs held-out generators: set protocol.held_out (the checkpoint held none out)")
    held = _canonical(held, known, "ES4 protocol.held_out")
    if REAL in held:
        raise ProtocolError(f"ES4 holds out generators; {REAL!r} cannot be held out")
    trained_on = sorted(set(held) & set(ck.trained))
    if trained_on:
        raise ProtocolError(
            f"ES4 holds out {trained_on}, but the checkpoint trained on them (classes "
            f"{list(ck.trained)}): they would not be zero-shot"
        )
    notes = []
    if set(held) != set(ck.held_out):
        notes.append(f"held-out classes {sorted(held)} differ from the checkpoint's {sorted(ck.held_out)}")
    return _standard([*ck.trained, *held, *([REAL] if REAL in present else [])], ck, notes)


@PROTOCOLS.register("custom")
def _custom(cfg: ProtocolConfig, ck: CheckpointInfo, present: Sequence[str], known: set[str]) -> _Rule:
    indexed = _canonical(cfg.indexed or ck.trained, known, "custom protocol.indexed")
    novel = _canonical(cfg.zero_shot, known, "custom protocol.zero_shot")
    both = sorted(set(indexed) & set(novel))
    if both:
        raise ProtocolError(f"custom protocol: {both} are both indexed and zero-shot")
    notes = [] if REAL in indexed + novel else [f"{REAL!r} is not part of this protocol: no detection metrics"]
    return _Rule(test=list(dict.fromkeys(indexed + novel)), indexed=indexed, notes=notes)


def _auto_name(ck: CheckpointInfo) -> str:
    family = ck.setting.split(".")[0]
    if family.lower() == "custom":
        return "custom"
    if family.upper() not in ("ES1", "ES2", "ES3", "ES4"):
        raise ProtocolError(f"protocol 'auto': the checkpoint's setting {ck.setting!r} is not ES1-ES4 or custom")
    return family.upper()


def resolve_protocol(
    cfg: ProtocolConfig, checkpoint: CheckpointInfo, test_counts: Mapping[str, int], reference_counts: Mapping[str, int]
) -> Protocol:
    """Resolves a protocol against a checkpoint and the shards.

    Args:
        cfg: the protocol's name and parameters.
        checkpoint: the classes the encoder trained on and held out.
        test_counts: images per class in the test split.
        reference_counts: images per class in the reference split (index rows).
    Returns:
        the :class:`Protocol`.
    Raises:
        ProtocolError: unknown protocol or class name, a class with no test images or (indexed)
            no reference images, a protocol that does not fit the checkpoint.
    """
    name = _auto_name(checkpoint) if cfg.name.lower() == "auto" else cfg.name
    lookup = {n.lower(): n for n in list_protocols()}
    family = name.split(".")[0].lower()  # "ES4.1" names a variant of ES4 (its own held-out list)
    if family not in lookup:
        raise ProtocolError(f"unknown protocol {cfg.name!r}; known: {list_protocols()} (ES4.x allowed) or 'auto'")
    present = sorted(c for c, n in test_counts.items() if n > 0)
    known = {c for c, n in [*test_counts.items(), *reference_counts.items()] if n > 0} | set(checkpoint.trained)
    rule = PROTOCOLS.get(lookup[family])(cfg, checkpoint, present, known)
    empty = [c for c in rule.test if test_counts.get(c, 0) == 0]
    if empty:
        raise ProtocolError(
            f"{name}: class(es) {empty} have no images in the test split (classes with test images: "
            f"{present}); ingest them or choose another protocol"
        )
    no_refs = [c for c in rule.indexed if reference_counts.get(c, 0) == 0]
    if no_refs:
        raise ProtocolError(f"{name}: indexed class(es) {no_refs} have no images in the reference split")
    if not rule.indexed:
        raise ProtocolError(f"{name}: no class to index")
    ignored = [c for c in present if c not in rule.test]
    notes = list(rule.notes)
    if ignored:
        notes.append(f"classes in the test split not evaluated by {name}: {ignored}")
    return Protocol(
        name=name,
        indexed=_ordered(rule.indexed),
        zero_shot=_ordered(c for c in rule.test if c not in checkpoint.trained),
        novel=_ordered(c for c in rule.test if c not in rule.indexed),
        real=REAL if REAL in rule.test else None,
        ignored=_ordered(ignored),
        notes=tuple(notes),
    )
