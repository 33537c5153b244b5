"""Everything a plugin needs, from one module: ``from barricade.api import ...``.

* the plugin base (:class:`Plugin`, :class:`ScannerPlugin` for scanner
  daemons) and its options (:class:`PluginOption`);
* the session it looks at (:class:`Context`, :class:`ClientInfo`, :class:`Trust`);
* the verdicts it returns (:data:`CONTINUE`, :func:`reject`, :func:`tempfail`,
  :func:`drop`, :func:`tag`, :class:`Verdict`, :class:`Action`, :class:`Flag`)
  and the error it raises when it cannot decide (:class:`CheckError`);
* its replies (:class:`ReplySpec`) and the core ones by name (:class:`ReplyId`);
* the shared services, awaited directly from a hook: ``self.dns`` (the
  cached resolver), ``self.state`` (the shared store), ``self.blocking``
  (the bounded thread pool for blocking code);
* the errors it meets: :class:`StoreError` (a shared-store call failed) and
  :class:`OptionError` (raised from its constructor: one start-up line);
* :class:`PluginHarness`, to test it in process.

``docs/plugins.md`` is the guide.  The older import paths
(``barricade.plugin``, ``barricade.policy.verdict`` ...) keep working.
"""

from __future__ import annotations

from barricade.client import ClientInfo
from barricade.harness import PluginHarness, Result
from barricade.options import OptionError
from barricade.plugin import Direct, Plugin, PluginOption, ScannerError, ScannerPlugin, Services
from barricade.policy.pipeline import Check, Context, Trust, immediate
from barricade.policy.verdict import (
    CONTINUE,
    Action,
    CheckError,
    Flag,
    Verdict,
    delayable_reject,
    drop,
    ireject,
    reject,
    tag,
    tempfail,
)
from barricade.replies import ReplyId, ReplySpec
from barricade.state.base import StoreError

__all__ = [
    "CONTINUE", "Action", "Check", "CheckError", "ClientInfo", "Context", "Direct", "Flag",
    "OptionError", "Plugin", "PluginHarness", "PluginOption", "ReplyId", "ReplySpec", "Result",
    "ScannerError", "ScannerPlugin", "Services", "StoreError", "Trust", "Verdict",
    "delayable_reject", "drop", "immediate", "ireject", "reject", "tag", "tempfail",
]
