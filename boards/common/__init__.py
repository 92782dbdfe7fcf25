# Board code shared by the real-hardware boards (esp32, rp2040). Only
# frontend.py and pinmap.py are pure Python (no machine) and run on the Unix
# port for host tests; hal.py and board.py get every machine object through a
# port object, so they import no machine either.
