#!/usr/bin/env node
// Boots the RP2040 firmware image in rp2040js and plays the charger's plant
// on the Pico's pins. Driven over stdin/stdout, one JSON object per line:
// every request gets exactly one reply ({"ok": true, ...} or {"ok": false,
// "error": ...}). Time here is emulated time (the emulator is not cycle
// accurate): no figure from it is a hardware figure.
//
//   node run.js --image firmware.uf2 --bootrom rp2040-bootrom-b1.bin [--flash-out f.bin]
//
// Requests (see host_tests/rp2040emu.py for the Python side):
//   {"cmd": "run", "ms": 100}                          run emulated time
//   {"cmd": "send", "text": "status()\r"}              type into the USB CDC REPL
//   {"cmd": "until", "text": ">>> ", "ms": 5000}       run until the console shows text
//                                  (optional "after": only text after that string counts)
//   {"cmd": "plant", ...}                              set the world outside (see Plant.set)
//   {"cmd": "state"}                                   pins and plant as they are now
//   {"cmd": "events", "clear": true}                   relay / pilot / watchdog events seen
//   {"cmd": "output", "clear": true}                   console text seen so far
//   {"cmd": "stats"}                                   instructions run, PC, resets
// EMU_DEBUG=1 prints the PC every 2M instructions to stderr (a hung boot).
//
// Gaps of rp2040js 1.4.1 this file fills in (each marked "shim" below):
//   - flash program/erase through the boot ROM are ignored: SSI + IO_QSPI shim;
//   - BOOTSEL (QSPI chip select) reads as held: released;
//   - the watchdog only logs: it is recorded as an event and resets the chip,
//     keeping the flash contents (a power-on would keep them too).
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { Simulator, USBCDC, ConsoleLogger, LogLevel } = require('rp2040js');

const FLASH_BASE = 0x10000000;
const CYCLE_NS = 8; // 125 MHz
const DEBUG = !!process.env.EMU_DEBUG;

// --- arguments --------------------------------------------------------------------
function parseArgs(argv) {
  const a = {};
  for (let i = 2; i < argv.length; i += 2) a[argv[i].replace(/^--/, '')] = argv[i + 1];
  if (!a.image || !a.bootrom) throw new Error('usage: run.js --image fw.uf2|fw.bin --bootrom rom.bin');
  return a;
}

function loadImage(flash, file) {
  const buf = fs.readFileSync(file);
  if (file.endsWith('.bin')) {
    flash.set(buf, 0);
    return;
  }
  // UF2: 512-byte blocks, payload address at 12, length at 16, data from 32.
  for (let off = 0; off + 512 <= buf.length; off += 512) {
    if (buf.readUInt32LE(off) !== 0x0a324655 || buf.readUInt32LE(off + 4) !== 0x9e5d5157) {
      throw new Error('not a UF2 block at ' + off);
    }
    const addr = buf.readUInt32LE(off + 12);
    const len = buf.readUInt32LE(off + 16);
    flash.set(buf.subarray(off + 32, off + 32 + len), addr - FLASH_BASE);
  }
}

function loadBootrom(file) {
  const buf = fs.readFileSync(file);
  if (buf.length !== 16384) throw new Error('boot ROM must be 16384 bytes, got ' + buf.length);
  const words = new Uint32Array(4096);
  for (let i = 0; i < 4096; i++) words[i] = buf.readUInt32LE(4 * i);
  return words;
}

// --- shim: SPI NOR flash behind the SSI in direct mode ------------------------------
// The boot ROM's flash_range_erase/program talk to the flash chip through the
// SSI data register with chip select forced low through IO_QSPI SS_CTRL. One
// chip-select-low period is one command. Without that override (boot stage 2
// uses the SSI's own chip select) a command starts when the RX FIFO is empty.
function installFlashShim(mcu) {
  const flash = mcu.flash;
  const ssi = mcu.peripherals[0x18000];
  const ioqspi = mcu.peripherals[0x40018];
  const regs = new Map();
  let csLow = false;
  let cmd = [];
  const rx = [];
  const SR2 = 0x02; // quad enable already set: boot stage 2 then writes nothing

  function respond(byte) {
    // One byte out, one byte back: the response to the byte at position n.
    cmd.push(byte);
    const n = cmd.length - 1;
    const op = cmd[0];
    const addr = () => (cmd[1] << 16) | (cmd[2] << 8) | cmd[3];
    switch (op) {
      case 0x05: return 0; // status 1: never busy, write enable irrelevant
      case 0x35: return SR2;
      case 0x9f: return [0, 0xef, 0x40, 0x15][n] ?? 0; // W25Q16 JEDEC id
      case 0x4b: return n >= 5 ? (0xe6 + n) & 0xff : 0; // unique id after 4 dummy bytes
      case 0x03:
        if (n >= 4) return flash[(addr() + n - 4) & 0xffffff];
        return 0;
      case 0x02:
        if (n >= 4) {
          const a = addr();
          const page = a & ~0xff;
          const at = page | ((a + n - 4) & 0xff); // wraps within the 256-byte page
          flash[at] &= byte;
        }
        return 0;
      case 0x20: case 0x52: case 0xd8:
        if (n === 3) {
          const size = op === 0x20 ? 4096 : op === 0x52 ? 32768 : 65536;
          const a = addr() & ~(size - 1);
          flash.fill(0xff, a, a + size);
        }
        return 0;
      default: return 0;
    }
  }

  ioqspi.readUint32 = (offset) => regs.get(offset & 0xfff) ?? 0;
  ioqspi.writeUint32 = (offset, value) => {
    offset &= 0xfff;
    regs.set(offset, value >>> 0);
    if (offset === 0x0c) { // GPIO_QSPI_SS_CTRL: OUTOVER bits 9:8, 2 = drive low
      const low = ((value >>> 8) & 3) === 2;
      if (low !== csLow) cmd = [];
      csLow = low;
    }
  };

  const ssiRead = ssi.readUint32.bind(ssi);
  const ssiWrite = ssi.writeUint32.bind(ssi);
  ssi.readUint32 = (offset) => {
    switch (offset) {
      case 0x60: return rx.length ? rx.shift() : 0; // DR0
      case 0x24: return rx.length; // RXFLR
      case 0x20: return 0; // TXFLR: sent at once
      case 0x28: return 0x06 | (rx.length ? 0x08 : 0); // SR: TFE, TFNF, RFNE when data
      default: return ssiRead(offset);
    }
  };
  ssi.writeUint32 = (offset, value) => {
    if (offset === 0x60) {
      if (!csLow && rx.length === 0) cmd = [];
      const b = respond(value & 0xff);
      if (rx.length < 16) rx.push(b); // the SSI's RX FIFO is 16 deep
      return;
    }
    if (offset === 0x08 && value === 0) { rx.length = 0; cmd = []; }
    ssiWrite(offset, value);
  };
}

// --- the plant: what the Pico's pins are wired to ------------------------------------
// Pin map: boards/rp2040/pins.py (defaults) with the tethered-cable override
// the test config sets (ct_adc on GP27); the numbers are set per run.
class Plant {
  constructor(mcu, events) {
    this.mcu = mcu;
    this.events = events;
    this.p = {
      cp_pwm: 15, cp_adc_ch: 0, pp_adc_ch: 1, ntc_adc_ch: 2, ct_adc_ch: null,
      relay: 14, aux: 13, rcd: 12, ground: 10, lock: 9, lock_fb: 8,
      // Pico divider (boards/rp2040/pins.py): R1 100k, R2 33k, R3 24k to 3V3.
      r1: 100000, r2: 33000, r3: 24000, vref: 3300,
    };
    this.ev = 'A';          // A (no EV), B, C, D, E (short), F? (no diode: "nodiode")
    this.diode = true;
    this.ev_max_a = 32;     // what the EV draws at most
    this.pp_ohm = null;     // null: open (no cable)
    this.temp_c = 25;
    this.ntc_open = false;
    this.rcd_tripped = false;
    this.ground_ok = true;
    this.welded = false;
    this.ct_noise = 0;
    this.coil = false;
    this.aux = false;
  }

  set(o) {
    for (const k of Object.keys(o)) {
      if (k === 'cmd') continue;
      if (k === 'pins') Object.assign(this.p, o.pins);
      else if (k in this) this[k] = o[k];
      else throw new Error('unknown plant key ' + k);
    }
    this.drive();
  }

  pilotHighMv() {
    if (this.ev === 'E') return 0;
    return { A: 12000, B: 9000, C: 6000, D: 3000 }[this.ev];
  }

  adcMvForPilot(mv) {
    const { r1, r2, r3, vref } = this.p;
    return (mv / r1 + vref / r3) / (1 / r1 + 1 / r2 + 1 / r3);
  }

  // Volts at each ADC input, sampled at the moment of the conversion.
  adcMv(ch) {
    const p = this.p;
    if (ch === p.cp_adc_ch) {
      const high = this.mcu.gpio[p.cp_pwm].outputValue;
      let mv;
      if (this.ev === 'E') mv = 0;
      else if (high) mv = this.pilotHighMv();
      else mv = (this.ev === 'A' || this.diode) ? -12000 : -this.pilotHighMv();
      return this.adcMvForPilot(mv);
    }
    if (ch === p.pp_adc_ch) {
      if (this.pp_ohm == null) return p.vref;
      return p.vref * this.pp_ohm / (this.pp_ohm + 1000);
    }
    if (ch === p.ntc_adc_ch) {
      if (this.ntc_open) return p.vref;
      const r = 10000 * Math.exp(3950 * (1 / (this.temp_c + 273.15) - 1 / 298.15));
      return p.vref * r / (r + 10000);
    }
    if (ch === p.ct_adc_ch) {
      // SCT-013-000 (2000 turns) into 22 ohm on a 1.65 V bias, 50 Hz.
      const amps = this.currentA();
      const t = this.now() / 1e9;
      const peakMv = amps * Math.SQRT2 / 2000 * 22 * 1000;
      return p.vref / 2 + peakMv * Math.sin(2 * Math.PI * 50 * t);
    }
    return 0;
  }

  offeredA() {
    const d = this.dutyPm ?? 0;
    if (d >= 100 && d <= 850) return d * 0.6 / 10;
    if (d > 850 && d <= 960) return (d - 640) * 2.5 / 10;
    return 0;
  }

  currentA() {
    if (!this.coil && !this.welded) return 0;
    if (this.ev !== 'C' && this.ev !== 'D') return 0;
    return Math.min(this.ev_max_a, this.offeredA());
  }

  // Digital inputs, at their electrical levels (boards/rp2040/pins.py):
  // aux closed = low, RCD tripped = low, earth present = high, lock closed = low.
  drive() {
    const g = this.mcu.gpio;
    const p = this.p;
    this.aux = this.coil || this.welded;
    g[p.aux].setInputValue(!this.aux);
    g[p.rcd].setInputValue(!this.rcd_tripped);
    g[p.ground].setInputValue(this.ground_ok);
    if (p.lock_fb != null) g[p.lock_fb].setInputValue(!(p.lock != null && g[p.lock].outputValue));
  }

  // Called when an output pin changes.
  outputs() {
    const g = this.mcu.gpio;
    const coil = g[this.p.relay].outputValue;
    if (coil !== this.coil) {
      this.coil = coil;
      this.events.push({ t_us: this.now() / 1000, what: 'coil', on: coil });
    }
    this.drive();
  }
}

// PWM duty of the pilot from the PWM slice registers (per mille).
function pilotDutyPm(mcu, pin) {
  const slice = mcu.pwm.channels[(pin >> 1) & 7];
  const g = mcu.gpio[pin];
  if (g.functionSelect !== 4) return g.outputValue ? 1000 : 0; // plain GPIO level
  const top = slice.top + 1;
  const cc = (pin & 1) ? (slice.cc >>> 16) : (slice.cc & 0xffff);
  if (!(slice.csr & 1)) return g.outputValue ? 1000 : 0; // slice disabled
  return Math.round(Math.min(cc, top) * 1000 / top);
}

// --- the machine -------------------------------------------------------------------
// A chip reset (the watchdog's) is a fresh rp2040js instance with the flash
// contents carried over: rp2040js's own reset() only resets the core and the
// PWM (and erases the flash), and a half-reset chip does not boot again.
// Emulated time runs on across resets (`base` + the chip's own clock).
function main() {
  const args = parseArgs(process.argv);
  const rom = loadBootrom(args.bootrom);
  const events = [];
  const input = [];
  const stats = { instructions: 0 };
  let output = '';
  let resets = 0;
  let base = 0; // ns of emulated time before this chip's power-on
  let mcu = null;
  let pendingReset = false;
  const plant = new Plant(null, events);
  const now = () => base + mcu.clock.nanos;
  plant.now = now;

  function powerOn(flashContent, reason) {
    const old = mcu;
    if (old) base += old.clock.nanos;
    const sim = new Simulator();
    mcu = sim.rp2040;
    mcu.logger = new ConsoleLogger(LogLevel.Error, true);
    mcu.onBreak = (code) => {
      events.push({ t_us: now() / 1000, what: 'break', code, pc: mcu.core.PC });
    };
    mcu.loadBootrom(rom); // first: it resets, which erases the flash
    if (flashContent) mcu.flash.set(flashContent);
    else loadImage(mcu.flash, args.image);
    installFlashShim(mcu);
    // shim: BOOTSEL released (the chip select line reads high).
    Object.defineProperty(mcu.qspi[1], 'inputValue', { get: () => true });
    const watchdog = mcu.peripherals[0x40058];
    if (reason) watchdog.reason = reason; // machine.reset_cause() says WDT_RESET
    // shim: the watchdog resets the chip (rp2040js only logs it).
    watchdog.onWatchdogTrigger = () => {
      // Stop its timer here: left running at count 0 its alarm fires again
      // at the same instant, for ever (rp2040js expects a reset right away).
      watchdog.alarm.enable = false;
      watchdog.timer.enable = false;
      if (pendingReset) return;
      // reason 1: the timer ran out; 2: forced (machine.reset() goes this way)
      events.push({ t_us: now() / 1000, what: 'watchdog_reset', timeout: watchdog.reason === 1 });
      resets++;
      pendingReset = true;
    };
    plant.mcu = mcu;
    for (const p of [plant.p.relay, plant.p.lock]) {
      if (p != null) mcu.gpio[p].addListener(() => plant.outputs());
    }
    // The ADC reads the plant at the moment of the conversion.
    const adc = mcu.adc;
    adc.onADCRead = (ch) => {
      const mv = Math.max(0, Math.min(3300, plant.adcMv(ch)));
      adc.currentChannel = ch;
      adc.channelValues[ch] = Math.round(mv * 4095 / 3300);
      adc.sampleAlarm.schedule(adc.sampleTime * 1000);
    };
    plant.coil = false;
    mcu.core.PC = FLASH_BASE; // boot stage 2, as rp2040js's MicroPython demo does
    const cdc = new USBCDC(mcu.usbCtrl);
    cdc.onDeviceConnected = () => { cdc.sendSerialByte(13); };
    cdc.onSerialData = (buf) => {
      output += Buffer.from(buf).toString('latin1');
      if (output.length > 1 << 20) output = output.slice(-(1 << 19)); // a runaway print loop
    };
    // rp2040js answers every OUT read at once, with zero bytes when it has
    // nothing: the device re-arms at once and the USB stack spins at full
    // speed. Hold the read until there is input, as a real host does.
    const answerRead = mcu.usbCtrl.onEndpointRead;
    let pendingRead = null;
    mcu.usbCtrl.onEndpointRead = (ep, size) => {
      if (ep === cdc.outEndpoint && cdc.txFIFO.itemCount === 0) {
        pendingRead = size;
        return;
      }
      answerRead(ep, size);
    };
    cdc.flushRead = () => {
      if (pendingRead != null && cdc.txFIFO.itemCount > 0) {
        const size = pendingRead;
        pendingRead = null;
        answerRead(cdc.outEndpoint, size);
      }
    };
    mcu.cdc = cdc;
    input.length = 0; // what was typed before the reset is lost
    plant.drive();
  }

  let lastDuty = -1;
  function trackPilot() {
    const d = pilotDutyPm(mcu, plant.p.cp_pwm);
    plant.dutyPm = d;
    if (d !== lastDuty) {
      events.push({ t_us: now() / 1000, what: 'pilot', duty_pm: d });
      lastDuty = d;
    }
  }

  // Runs emulated time `ns` more, or until stop() returns true (checked
  // every 0.1 ms of emulated time, when the console input is fed too).
  function run(ns, stop) {
    const end = now() + ns;
    let check = now() + 100000;
    while (now() < end) {
      const clock = mcu.clock;
      const core = mcu.core;
      const t = base + clock.nanos;
      if (core.waiting) {
        const step = Math.min(clock.nanosToNextAlarm, end - t, check - t);
        clock.tick(Math.max(step, CYCLE_NS));
      } else {
        // A lockup (BKPT, a fault in a fault) can report 0 cycles: time moves on anyway.
        clock.tick(Math.max(1, core.executeInstruction()) * CYCLE_NS);
        stats.instructions++;
        if (DEBUG && stats.instructions % 2000000 === 0) {
          process.stderr.write(`t=${(now() / 1e6).toFixed(1)}ms pc=${core.PC.toString(16)} waiting=${core.waiting}\n`);
        }
      }
      if (pendingReset) {
        pendingReset = false;
        const keep = mcu.flash.slice(0, 2 * 1024 * 1024); // the Pico's 2 MiB flash chip
        if (resets > 20) throw new Error('more than 20 watchdog resets');
        powerOn(keep, 1);
      }
      if (now() >= check) {
        check = now() + 100000;
        trackPilot();
        while (input.length && !mcu.cdc.txFIFO.full) mcu.cdc.sendSerialByte(input.shift());
        mcu.cdc.flushRead();
        if (stop && stop()) return true;
      }
    }
    return false;
  }

  powerOn(null, 0);

  const handlers = {
    run: (r) => { run(r.ms * 1e6); return {}; },
    send: (r) => { for (const b of Buffer.from(r.text, 'latin1')) input.push(b); return {}; },
    until: (r) => {
      const t0 = now();
      // With `after`: the text must come after the first `after` (a command's echo).
      const seen = r.after == null ? () => output.includes(r.text) : () => {
        const i = output.indexOf(r.after);
        return i >= 0 && output.indexOf(r.text, i + r.after.length) >= 0;
      };
      const found = run(r.ms * 1e6, seen);
      return { found, waited_ms: (now() - t0) / 1e6 };
    },
    plant: (r) => { plant.set(r); return {}; },
    state: () => ({
      pilot_duty_pm: pilotDutyPm(mcu, plant.p.cp_pwm),
      coil: plant.coil, aux: plant.aux, offered_a: plant.offeredA(), current_a: plant.currentA(),
      ev: plant.ev, resets,
    }),
    events: (r) => { const e = events.slice(); if (r.clear) events.length = 0; return { events: e }; },
    output: (r) => { const o = output; if (r.clear) output = ''; return { text: o }; },
    stats: () => ({ instructions: stats.instructions, pc: mcu.core.PC, events: events.length,
                    output: output.length, resets }),
  };

  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let reply;
    try {
      const r = JSON.parse(line);
      const h = handlers[r.cmd];
      if (!h) throw new Error('unknown cmd ' + r.cmd);
      const res = h(r);
      reply = Object.assign({ ok: true, t_ms: now() / 1e6 }, res);
    } catch (e) {
      reply = { ok: false, error: String(e && e.stack || e) };
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  });
  rl.on('close', () => process.exit(0));
}

main();
