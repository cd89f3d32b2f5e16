"""Point-in-time recovery on MySQL/MariaDB: a binlog archive in the backup store, replay to a second, undo.

``binlog``: the binary log format (events, transaction groups, filtered copies); ``client``: the one place that
runs ``mariadb-binlog``; ``archive``: copies what is new into the store (one pass, then exits); ``replay``:
restore to a time / position / GTID with named transactions skipped, and undo of a window's row changes.
"""
