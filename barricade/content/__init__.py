"""Content filtering: what the message says, decoded once for every content check.

Sans-IO: :mod:`.mime` decodes the message as it streams (MIME structure,
transfer encodings, charsets; HTML through :mod:`.markup`) into text, links
and part records, shared by the plugins through :mod:`.shared`;
:mod:`.uri` finds and normalises URIs and reduces host names to their
registered domain, :mod:`.uribl` judges them against DNS lists and
heuristics; :mod:`.headers` holds the RFC 2822 header checks,
:mod:`.attachments` and :mod:`.archive` the attachment policy, :mod:`.emew`
the Message-ID watermark.  The shipped plugins (``plugins/uri.py``,
``rfc2822.py``, ``attachment.py``, ``hashlists.py``, ``emew.py``) give the
replies.
"""
