"""What a reconcile does, decided from what it observed. Pure: no I/O here, no clock
(the time is an input), so every rule is table-tested in tests/unit."""
