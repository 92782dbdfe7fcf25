# The outgoing queue for messages that must reach the CSMS: transaction
# messages (StartTransaction, StopTransaction, transaction MeterValues) and
# critical notifications. A message is written to the store before it is
# sent and removed only when the CSMS confirmed it, so neither going offline
# nor a power cut loses it; after reconnecting they go out in order.
#
# Transactions started offline get a local id (negative); when the CSMS's
# StartTransaction answer gives the real one, every queued message of that
# transaction is rewritten, and the mapping is kept for what comes later.
#
# The queue is one record rewritten atomically on each change: simple and
# crash-safe at the sizes a charger queues (bounded by MAX_ITEMS).
#
# Encoding and writing 500 queued messages is long work (~100 kB of JSON;
# hundreds of ms on an MCU). Up to SYNC_ITEMS the record is written at once,
# as before; above, a task writes it item by item in bounded slices
# (Store.write_work, one item per unit) and changes made meanwhile are written
# by the next pass. The record on flash then trails memory by the time of one
# write, the same window a power cut during a blocking write has. Reading the
# record (a new client after a reboot) or an orderly stop writes it at once
# first (Store.pending), so nothing queued is lost that way.
import json
from firmware.core.sched import Slice, Tasks, WORK_SLICE_MS
from firmware.core.work import run_sync
from firmware.core.store import is_int, list_of
from firmware.core.errtext import errtext  # an exception in words for a log line

MAX_ITEMS = 500
SYNC_ITEMS = 32  # up to this many items the record is written at once
KEEP = ("StartTransaction", "StopTransaction")  # never dropped to make room
MAX_RECORD = 524288  # the record's size bound when read back (500 items of about 1 kB)


def _item_ok(i):
    # [seq, action, payload, local_tx or None, attempts]
    return (len(i) == 5 and is_int(i[0]) and isinstance(i[1], str) and isinstance(i[2], dict)
            and (i[3] is None or is_int(i[3])) and is_int(i[4]))


def _queue_ok(r):
    return (list_of(r["items"], _item_ok) and is_int(r["seq"]) and is_int(r["local_tx"])
            and isinstance(r.get("txmap", {}), dict))


class TxQueue:
    def __init__(self, store, log, name="ocpp_queue.json", tasks=None):
        self.store = store
        self.log = log
        self.name = name
        self.items = []  # [seq, action, payload, local_tx or None, attempts]
        self.seq = 0
        self.local_tx = 0  # last local transaction id handed out (negative)
        self.txmap = {}  # local id (str) -> CSMS transaction id
        self.dropped = 0
        self.tasks = tasks if tasks is not None else Tasks(log)  # where the record writer runs
        self.work = Slice(WORK_SLICE_MS)  # the slices of the large-record writer (its counters: tests, status)
        self._dirty = False
        self._writer = None
        self._flush = self.flush  # one bound method: Store.pending is checked by identity
        rec = store.read(name, None, check=_queue_ok, max_bytes=MAX_RECORD)
        if rec is not None:
            self.items = rec["items"]
            self.seq = rec["seq"]
            self.local_tx = rec["local_tx"]
            self.txmap = rec.get("txmap", {})

    def _save(self):
        if len(self.items) <= SYNC_ITEMS and self._writer is None:
            self.store.write(self.name, {"items": self.items, "seq": self.seq, "local_tx": self.local_tx,
                                         "txmap": self.txmap})
            return
        self._dirty = True
        self.store.pending[self.name] = self._flush
        if self._writer is None:
            self._writer = self.tasks.spawn(self._write_task(), "queue writer")

    def _pieces(self):
        # The record's JSON text, one queued item per piece (one work unit).
        yield '{"items": ['
        first = True
        for it in list(self.items):  # a push or pop meanwhile is the next pass's
            yield json.dumps(it) if first else ", " + json.dumps(it)
            first = False
        yield '], "seq": %d, "local_tx": %d, "txmap": %s}' % (self.seq, self.local_tx, json.dumps(self.txmap))

    def save_work(self):
        # One pass of the record as work (firmware/core/work.py).
        self._dirty = False
        yield from self.store.write_work(self.name, self._pieces())

    async def _write_task(self):
        me = self._writer
        try:
            while self._dirty:
                await self.work.run(self.save_work())
        except OSError as e:
            self.log.error("ocpp", "queue record %s not written: %s" % (self.name, errtext(e)))
        finally:
            if self._writer is me:  # not replaced after a flush()
                self._writer = None
                if not self._dirty and self.store.pending.get(self.name) is self._flush:
                    del self.store.pending[self.name]

    def flush(self):
        # Write the record now, whatever the writer task is doing (a reboot,
        # or a new queue reading the record).
        w = self._writer
        self._writer = None
        if w is not None:
            w.cancel()  # its partial temp file is rewritten just below
        self.store.pending.pop(self.name, None)
        run_sync(self.save_work())

    def new_tx(self):
        self.local_tx -= 1
        self._save()
        return self.local_tx

    def push(self, action, payload, tx=None):
        if len(self.items) >= MAX_ITEMS:
            for k, it in enumerate(self.items):
                if it[1] not in KEEP:
                    del self.items[k]
                    self.dropped += 1
                    self.log.warn("ocpp", "queue full: dropped oldest %s (seq %d)" % (it[1], it[0]))
                    break
        self.seq += 1
        self.items.append([self.seq, action, payload, tx, 0])
        self._save()
        return self.seq

    def head(self):
        return self.items[0] if self.items else None

    def pop(self, seq):
        if self.items and self.items[0][0] == seq:
            del self.items[0]
            self._save()

    def attempt(self, seq):
        it = self.head()
        if it and it[0] == seq:
            it[4] += 1
            self._save()
            return it[4]
        return 0

    def resolve(self, local, remote):
        # The CSMS named the transaction we called `local`.
        self.txmap[str(local)] = remote
        for it in self.items:
            if it[3] == local and "transactionId" in it[2]:
                it[2]["transactionId"] = remote
        self._save()

    def remote_id(self, tx):
        # The CSMS's id for a transaction (local ids map once resolved).
        if tx is None or tx >= 0:
            return tx
        return self.txmap.get(str(tx))

    def __len__(self):
        return len(self.items)
