# Long work as generators (hashing, signature checks, installs, big records):
# the work is written once and yields after each bounded unit (a chunk hashed
# or written, a few bits of a scalar multiplication, one modular squaring).
# A task drives it with sched.Slice.run, which gives the loop control once
# the slice's time budget is spent; run_sync drives the same generator to the
# end at once, for host tools (CPython too: nothing here needs MicroPython),
# tests, and the maintenance (USB) path where no loop runs.


def run_sync(work):
    # Returns the generator's return value.
    try:
        while True:
            next(work)
    except StopIteration as e:
        return e.value
    finally:
        work.close()
