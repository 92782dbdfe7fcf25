def test_plug_charge_unplug(fw):
    st = fw.conn()
    assert st["status"] == "Available" and not st["contactor"]
    st = fw.charging(32)
    assert st["status"] == "Charging" and st["duty_pm"] == 533 and st["offered_ma"] == 32000
    fw.advance(3600_000)
    st = fw.conn()
    assert 20_000 < st["energy_wh"] < 23_000
    fw.cmd("unplug")
    fw.advance(200)
    st = fw.conn()
    assert not st["contactor"] and st["status"] == "Available"
    assert st["last_session"]["reason"] == "EVDisconnected"
