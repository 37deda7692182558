"""
First-sample hooks: when a table of a storage commits its first row, or a row
with fields the table never had, the hooks of that storage run once for it
(Kotori's "a dashboard appears for every new device").

- `samples`: what each table has shown so far (kept in ``<data_dir>/hooks.sqlite``
  across restarts) and the `FirstSample` a hook is given;
- `runner`: one queue per hook, off the data path, retried with backoff;
- `kinds`: the ``python`` and ``command`` hooks; `grafana`: the ``grafana`` hook.
"""
