"""The one error every store raises (its own module: the store interface and the
driver of writes nobody waits for both need it)."""


class StoreError(Exception):
    """The store could not answer in time or at all.

    One type for every backend failure so that callers need a single
    ``except`` to apply their temp-fail/skip policy.
    """
