"""One sample identity and one deletion-request validator for the whole package.

Usage::

    from recircuit.data.requests import RequestError, check_request, sample_key
    check_request(fr.forget, fr.retain, test=split.test, heldout=split.valid, train=split.train)
    keys = {sample_key(s) for s in fr.forget}           # "u196:i242:t881250949", "test:17" or "sha256:..."

Everything that keys a sample (splits, unlearning, evaluation) calls :func:`sample_key`, and
everything that checks a deletion request or an evaluation protocol calls :func:`check_request`,
so that "is this sample in that set" has one answer everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from recircuit.data.prompts import Sample
from recircuit.errors import InputError

__all__ = ["RequestError", "check_disjoint", "check_request", "sample_key"]


class RequestError(InputError):
    """A deletion request or an evaluation protocol that cannot be honoured (the message says why and how to fix it)."""


def sample_key(s: Sample) -> str:
    """The identity of one sample: its ``uid``, or a digest of the prompt when it has none.

    Samples built from MovieLens carry a ``uid`` (``"u196:i242:t881250949"``: user, target item,
    timestamp), and samples read with :func:`recircuit.data.load_tallrec_json` one made of the file
    stem and record index (``"test:17"``); that uid is the key. A sample with an empty ``uid``
    (made by hand) is keyed ``"sha256:"`` plus the first 24 hex digits of the sha256 of its
    instruction and input, i.e. of the prompt the model sees. The answer is left out on purpose:
    one prompt with two labels is one query, and a prompt that is both forgotten and tested (or
    retained) is a clash whatever its label. Counterfactual copies (:meth:`Sample.with_history`,
    :meth:`Sample.with_target`) keep the uid, hence the key, of their source.

    Args:
        s: the sample.

    Returns:
        A string key; equal keys mean the same sample.
    """
    if s.uid:
        return s.uid
    digest = hashlib.sha256(f"{s.instruction}\x1f{s.input}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest[:24]}"


def _keys(samples: Iterable[Sample]) -> set[str]:
    return {sample_key(s) for s in samples}


def _example(keys: set[str]) -> str:
    return repr(sorted(keys)[0])


def check_disjoint(**parts: Sequence[Sample]) -> None:
    """Refuse named sample lists that share a sample (by :func:`sample_key`).

    Example: ``check_disjoint(train=split.train, valid=split.valid, test=split.test)``.

    Raises:
        RequestError: two of the lists share a sample (the message names both and one key).
    """
    names = list(parts)
    keys = {n: _keys(parts[n]) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = keys[a] & keys[b]
            if common:
                raise RequestError(
                    f"{a} and {b} overlap in {len(common)} samples (e.g. {_example(common)})",
                    field=f"{a}/{b}", fix="a sample may be in only one of them",
                )


def check_request(
    forget: Sequence[Sample],
    retain: Sequence[Sample] | None = None,
    test: Sequence[Sample] | None = None,
    heldout: Sequence[Sample] | None = None,
    train: Sequence[Sample] | None = None,
    train_size: int | None = None,
) -> None:
    """Refuse a deletion request (or an evaluation protocol) that cannot be honoured.

    Every argument but ``forget`` is optional; ``None`` skips the checks that need it. The checks,
    in order:

    * ``forget`` is not empty;
    * ``forget`` is no larger than the training set (``train_size``, else ``len(train)``);
    * every forget sample is a training sample (when ``train`` is given);
    * ``test``, when given, is not empty and shares no sample with ``forget`` (a test sample was
      never trained on) nor with ``retain`` (Retrain would train on it);
    * ``retain``, when given, is not empty, shares no sample with ``forget``, and lies inside
      ``train`` (when given);
    * ``heldout`` (the membership attack's non-members), when given, is not empty and shares no
      sample with ``forget``, ``retain`` or ``train``.

    Args:
        forget: the samples to forget.
        retain: the samples to keep (Retrain's training set).
        test: the utility test set.
        heldout: never-trained samples (e.g. the valid split), the MIA non-members.
        train: the full training set the model was trained on.
        train_size: the training set's size when ``train`` itself is not at hand.

    Raises:
        RequestError: the first check that fails; the message names the sets, gives a count and
            one example key, and says how to fix the request.
    """
    if len(forget) == 0:
        raise RequestError("The forget set is empty", field="forget", fix="name the users or samples to forget")
    if train is not None and train_size is None:
        train_size = len(train)
    if train_size is not None and len(forget) > train_size:
        raise RequestError(f"The forget set ({len(forget)}) is larger than the training set ({train_size})",
                           field="forget", fix="only training samples can be forgotten")
    forget_keys = _keys(forget)
    train_keys = _keys(train) if train is not None else None
    if train_keys is not None:
        missing = forget_keys - train_keys
        if missing:
            raise RequestError(f"{len(missing)} forget samples were never trained on (e.g. {_example(missing)})",
                               field="forget", fix="only training samples can be forgotten: take the forget set "
                               "from the training split (recircuit.data.forget_retain_split)")
    retain_keys = _keys(retain) if retain is not None else set()
    if test is not None:
        if len(test) == 0:
            raise RequestError("The test set is empty", field="test", fix="utility cannot be measured without one; "
                               "pass the test split")
        test_keys = _keys(test)
        clash = forget_keys & test_keys
        if clash:
            raise RequestError(f"{len(clash)} forget samples are in the test set (e.g. {_example(clash)})",
                               field="forget", fix="a test sample was never trained on and cannot be forgotten")
        if retain is not None:
            clash = retain_keys & test_keys
            if clash:
                raise RequestError(f"{len(clash)} retain samples are in the test set (e.g. {_example(clash)})",
                                   field="retain", fix="Retrain would train on test samples; "
                                   "take retain from the training split only")
    if retain is not None:
        if len(retain) == 0:
            raise RequestError("The retain set is empty; nothing would remain of the training data", field="retain",
                               fix="forget fewer users or samples")
        both = forget_keys & retain_keys
        if both:
            raise RequestError(f"{len(both)} samples are in both the forget and the retain set (e.g. {_example(both)})",
                               field="retain", fix="split the training data with recircuit.data.forget_retain_split")
        if train_keys is not None:
            stray = retain_keys - train_keys
            if stray:
                raise RequestError(f"{len(stray)} retain samples are not training samples (e.g. {_example(stray)})",
                                   field="retain", fix="retain must be the training set minus the forget set")
    if heldout is not None:
        if len(heldout) == 0:
            raise RequestError("The held-out set is empty", field="heldout",
                               fix="the membership attack needs never-trained samples: pass the valid split")
        trained = forget_keys | retain_keys | (train_keys or set())
        clash = trained & _keys(heldout)
        if clash:
            raise RequestError(f"{len(clash)} held-out samples were trained on (e.g. {_example(clash)})",
                               field="heldout", fix="MIA non-members must never have been trained on: use the valid split")
