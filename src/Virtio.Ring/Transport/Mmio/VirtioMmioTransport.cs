using System;
using System.Buffers.Binary;
using System.Threading;
using Virtio.Ring.Split;

namespace Virtio.Ring.Transport.Mmio;

/// <summary>
/// The device side of virtio-mmio (VIRTIO 1.2, 4.2): a register-level dispatcher the VMM calls from its MMIO exit
/// handler, <see cref="Read"/> and <see cref="Write"/>, over a <see cref="VirtioDevice"/>. Version 2 by default;
/// Version 1 (legacy: GuestPageSize, QueueAlign, QueuePFN, split rings only) as an option.
/// <para>
/// Nothing a guest writes makes it throw: control registers take aligned 32-bit accesses only; anything else, an
/// unknown offset, a read of a write-only register or a write of a read-only one is ignored (reads return 0) and
/// counted in <see cref="InvalidAccesses"/>, with <see cref="InvalidAccess"/> called for the VMM's log; and
/// the device model's own failures are contained by <see cref="VirtioDevice"/> (DEVICE_NEEDS_RESET and
/// <see cref="VirtioDevice.Faulted"/>), so they never come out of <see cref="Read"/> or <see cref="Write"/>.
/// </para>
/// <para>
/// <b>The interrupt line.</b> InterruptStatus gaining a bit raises the <see cref="IInterruptLine"/>; the guest
/// clearing the last bit through InterruptAck (or a reset) lowers it, so a level-triggered line follows the
/// status. A device may raise from a worker thread while a vCPU acknowledges: after lowering, the transport looks
/// at the status once more and raises again if a bit arrived meanwhile, so no interrupt is lost between the two.
/// </para>
/// </summary>
public sealed class VirtioMmioTransport : IVirtioMmioBus, IVirtioInterrupt
{
    private readonly VirtioDevice _device;
    private const uint SnapshotMagic = 0x494D_4D56; // "VMMI" read as little-endian bytes
    private const ushort SnapshotVersion = 1;
    private readonly IInterruptLine? _interruptLine;
    private readonly uint[] _legacyQueueAlign;
    private readonly uint[] _legacyQueuePfn;
    private uint _interruptStatus;
    private uint _deviceFeaturesSel;
    private uint _driverFeaturesSel;
    private uint _queueSel;
    private uint _legacyGuestPageSize = 4096;
    private long _invalidAccesses;

    /// <summary>Wires <paramref name="device"/> to an MMIO register window.</summary>
    /// <param name="device">The device model; its <see cref="VirtioDevice.Interrupt"/> is set to this transport.</param>
    /// <param name="interruptLine">
    /// The device's interrupt line: raised whenever InterruptStatus gains a bit, lowered when the guest has
    /// acknowledged every bit (an <see cref="Linux.EventFdInterruptLine"/> for a KVM irqfd, or an
    /// <see cref="InterruptLine"/> over the VMM's own interrupt controller).
    /// </param>
    /// <param name="legacy">Version 1 (legacy) register layout instead of Version 2.</param>
    /// <param name="vendorId">VendorID register.</param>
    public VirtioMmioTransport(VirtioDevice device, IInterruptLine? interruptLine = null, bool legacy = false, uint vendorId = 0)
    {
        ArgumentNullException.ThrowIfNull(device);
        _device = device;
        _interruptLine = interruptLine;
        IsLegacy = legacy;
        VendorId = vendorId;
        _legacyQueueAlign = new uint[device.QueueCount];
        _legacyQueuePfn = new uint[device.QueueCount];
        Array.Fill(_legacyQueueAlign, 4096u);
        device.Interrupt = this;
        device.LegacyTransport = legacy;
    }

    /// <summary>True for the Version 1 (legacy) register layout.</summary>
    public bool IsLegacy { get; }

    /// <summary>VendorID register.</summary>
    public uint VendorId { get; }

    /// <summary>The device behind the registers.</summary>
    public VirtioDevice Device => _device;

    /// <summary>InterruptStatus: bit 0 used buffer, bit 1 configuration change.</summary>
    public VirtioInterruptReason InterruptStatus => (VirtioInterruptReason)Volatile.Read(ref _interruptStatus);

    /// <summary>Accesses ignored because they were malformed.</summary>
    public long InvalidAccesses => Interlocked.Read(ref _invalidAccesses);

    /// <summary>Called for each ignored access: offset, size, and whether it was a write.</summary>
    public Action<ulong, int, bool>? InvalidAccess { get; set; }

    /// <inheritdoc/>
    public void Raise(VirtioInterruptReason reason, int queueIndex)
    {
        uint bits = (uint)reason & 3;
        if (bits == 0)
        {
            return;
        }

        Interlocked.Or(ref _interruptStatus, bits); // full barrier: the bit is visible before the line goes up
        _interruptLine?.Raise();
    }

    /// <summary>
    /// For a resampling irqfd (KVM_IRQFD_FLAG_RESAMPLE): KVM lowered the level at the guest's EOI and signalled
    /// the resample eventfd; raise the line again if InterruptStatus still has a bit the guest did not acknowledge.
    /// </summary>
    public void ResampleInterruptLine()
    {
        if (Volatile.Read(ref _interruptStatus) != 0)
        {
            _interruptLine?.Raise();
        }
    }

    /// <inheritdoc/>
    public uint Read(ulong offset, int size)
    {
        if (offset >= VirtioMmioRegisters.Config)
        {
            return ReadConfig(offset - VirtioMmioRegisters.Config, size);
        }

        if (size != 4 || offset % 4 != 0)
        {
            return Invalid(offset, size, write: false);
        }

        int index = (int)_queueSel;
        switch ((int)offset)
        {
            case VirtioMmioRegisters.MagicValue: return VirtioMmioRegisters.Magic;
            case VirtioMmioRegisters.Version: return IsLegacy ? 1u : 2u;
            case VirtioMmioRegisters.DeviceId: return _device.DeviceId;
            case VirtioMmioRegisters.VendorId: return VendorId;
            case VirtioMmioRegisters.DeviceFeatures:
                // Legacy drivers see only bits 0-31 (no VERSION_1, no packed ring).
                return IsLegacy ? (_deviceFeaturesSel == 0 ? _device.ReadDeviceFeatures(0) : 0) : _device.ReadDeviceFeatures(_deviceFeaturesSel);
            case VirtioMmioRegisters.QueueSizeMax:
                return _device.IsQueuePresent(index) ? (uint)_device.MaxQueueSize : 0; // 0: no such queue
            case VirtioMmioRegisters.QueueReady when !IsLegacy: return _device.IsQueueReady(index) ? 1u : 0u;
            case VirtioMmioRegisters.LegacyQueuePfn when IsLegacy:
                return (uint)index < (uint)_legacyQueuePfn.Length && _device.IsQueueReady(index) ? _legacyQueuePfn[index] : 0;
            case VirtioMmioRegisters.InterruptStatus: return Volatile.Read(ref _interruptStatus);
            case VirtioMmioRegisters.Status: return (uint)_device.Status;
            case VirtioMmioRegisters.ShmLenLow when !IsLegacy:
            case VirtioMmioRegisters.ShmLenHigh when !IsLegacy:
            case VirtioMmioRegisters.ShmBaseLow when !IsLegacy:
            case VirtioMmioRegisters.ShmBaseHigh when !IsLegacy:
                return 0xFFFF_FFFF; // 4.2.2: no shared memory region (length and base all ones)
            case VirtioMmioRegisters.QueueReset when !IsLegacy: return _device.IsQueueResetDone(index) ? 1u : 0u;
            case VirtioMmioRegisters.ConfigGeneration when !IsLegacy: return _device.ConfigGeneration;
            default: return Invalid(offset, size, write: false);
        }
    }

    /// <inheritdoc/>
    public void Write(ulong offset, int size, uint value)
    {
        if (offset >= VirtioMmioRegisters.Config)
        {
            WriteConfig(offset - VirtioMmioRegisters.Config, size, value);
            return;
        }

        if (size != 4 || offset % 4 != 0)
        {
            Invalid(offset, size, write: true);
            return;
        }

        int index = (int)_queueSel;
        switch ((int)offset)
        {
            case VirtioMmioRegisters.DeviceFeaturesSel: _deviceFeaturesSel = value; break;
            case VirtioMmioRegisters.DriverFeatures:
                if (!IsLegacy || _driverFeaturesSel == 0)
                {
                    _device.WriteDriverFeatures(_driverFeaturesSel, value);
                }

                break;
            case VirtioMmioRegisters.DriverFeaturesSel: _driverFeaturesSel = value; break;
            case VirtioMmioRegisters.QueueSel: _queueSel = value; break;
            case VirtioMmioRegisters.QueueSize: _device.SetQueueSize(index, (int)Math.Min(value, int.MaxValue)); break;
            case VirtioMmioRegisters.QueueReady when !IsLegacy: _device.SetQueueReady(index, value == 1); break;
            case VirtioMmioRegisters.QueueNotify:
                _device.NotifyQueue((int)(value & 0xFFFF), value);
                break;
            case VirtioMmioRegisters.InterruptAck: AcknowledgeInterrupts(value); break;
            case VirtioMmioRegisters.Status: WriteStatus(value); break;
            case VirtioMmioRegisters.QueueDescLow when !IsLegacy: SetLow(index, 0, value); break;
            case VirtioMmioRegisters.QueueDescHigh when !IsLegacy: SetHigh(index, 0, value); break;
            case VirtioMmioRegisters.QueueDriverLow when !IsLegacy: SetLow(index, 1, value); break;
            case VirtioMmioRegisters.QueueDriverHigh when !IsLegacy: SetHigh(index, 1, value); break;
            case VirtioMmioRegisters.QueueDeviceLow when !IsLegacy: SetLow(index, 2, value); break;
            case VirtioMmioRegisters.QueueDeviceHigh when !IsLegacy: SetHigh(index, 2, value); break;
            case VirtioMmioRegisters.ShmSel when !IsLegacy: break; // no regions to select
            case VirtioMmioRegisters.QueueReset when !IsLegacy:
                if (value == 1)
                {
                    _device.ResetQueue(index);
                }

                break;
            case VirtioMmioRegisters.LegacyGuestPageSize when IsLegacy: _legacyGuestPageSize = value; break;
            case VirtioMmioRegisters.LegacyQueueAlign when IsLegacy:
                if ((uint)index < (uint)_legacyQueueAlign.Length)
                {
                    _legacyQueueAlign[index] = value;
                }

                break;
            case VirtioMmioRegisters.LegacyQueuePfn when IsLegacy: WriteLegacyQueuePfn(index, value); break;
            default: Invalid(offset, size, write: true); break;
        }
    }

    /// <summary>
    /// Restores the transport and its device from <see cref="SaveState"/>'s bytes, checking them like guest
    /// input; false with the reason when refused (the device is then reset and the registers are at their reset
    /// values). The interrupt line is raised if the restored status has a bit pending.
    /// </summary>
    public bool TryRestoreState(ReadOnlySpan<byte> state, out DeviceStateError error)
    {
        var r = new DeviceStateReader(state);
        uint magic = r.ReadUInt32();
        ushort version = r.ReadUInt16();
        bool legacy = r.ReadBoolean();
        uint interruptStatus = r.ReadUInt32();
        uint deviceFeaturesSel = r.ReadUInt32();
        uint driverFeaturesSel = r.ReadUInt32();
        uint queueSel = r.ReadUInt32();
        uint guestPageSize = r.ReadUInt32();
        uint queues = r.ReadUInt32();
        error = !r.IsValid ? DeviceStateError.Malformed
            : magic != SnapshotMagic ? DeviceStateError.WrongMagic
            : version != SnapshotVersion ? DeviceStateError.UnsupportedVersion
            : legacy != IsLegacy || queues != (uint)_legacyQueuePfn.Length ? DeviceStateError.DeviceMismatch
            : (interruptStatus & ~3u) != 0 ? DeviceStateError.InvalidTransportState
            : DeviceStateError.None;
        uint[] align = new uint[_legacyQueueAlign.Length];
        uint[] pfn = new uint[_legacyQueuePfn.Length];
        for (int i = 0; error == DeviceStateError.None && i < align.Length; i++)
        {
            align[i] = r.ReadUInt32();
            pfn[i] = r.ReadUInt32();
        }

        ReadOnlySpan<byte> device = r.ReadBytes(int.MaxValue);
        if (error == DeviceStateError.None && (!r.IsValid || r.Remaining != 0))
        {
            error = DeviceStateError.Malformed;
        }

        if (error == DeviceStateError.None)
        {
            _device.TryRestoreState(device, out error);
        }

        if (error != DeviceStateError.None)
        {
            _device.WriteStatus(DeviceStatus.Reset);
            ResetRegisters();
            return false;
        }

        _deviceFeaturesSel = deviceFeaturesSel;
        _driverFeaturesSel = driverFeaturesSel;
        _queueSel = queueSel;
        _legacyGuestPageSize = guestPageSize;
        align.CopyTo(_legacyQueueAlign, 0);
        pfn.CopyTo(_legacyQueuePfn, 0);
        Volatile.Write(ref _interruptStatus, interruptStatus);
        ResampleInterruptLine();
        return true;
    }

    /// <summary>
    /// Saves the transport's registers (InterruptStatus, the selectors, the legacy queue registers) and its
    /// device (<see cref="VirtioDevice.SaveState"/>) as one versioned byte string. The VMM pauses the vCPUs first,
    /// so no register access races the save.
    /// </summary>
    public byte[] SaveState()
    {
        var w = new DeviceStateWriter();
        w.WriteUInt32(SnapshotMagic);
        w.WriteUInt16(SnapshotVersion);
        w.WriteBoolean(IsLegacy);
        w.WriteUInt32(Volatile.Read(ref _interruptStatus));
        w.WriteUInt32(_deviceFeaturesSel);
        w.WriteUInt32(_driverFeaturesSel);
        w.WriteUInt32(_queueSel);
        w.WriteUInt32(_legacyGuestPageSize);
        w.WriteUInt32((uint)_legacyQueuePfn.Length);
        for (int i = 0; i < _legacyQueuePfn.Length; i++)
        {
            w.WriteUInt32(_legacyQueueAlign[i]);
            w.WriteUInt32(_legacyQueuePfn[i]);
        }

        w.WriteBytes(_device.SaveState());
        return w.ToArray();
    }

    /// <summary>
    /// InterruptAck (4.2.2): clears the acknowledged bits; when none is left, lowers the line, then looks once
    /// more, because a device thread may have set a bit (and raised) between the clear and the lower.
    /// </summary>
    private void AcknowledgeInterrupts(uint value)
    {
        if (Interlocked.And(ref _interruptStatus, ~value) == 0 || _interruptLine is null)
        {
            return; // nothing was pending, or no line to lower
        }

        if (Volatile.Read(ref _interruptStatus) == 0)
        {
            _interruptLine.Lower();
            Interlocked.MemoryBarrier(); // the lower is done before the status is read again (store-load)
            if (Volatile.Read(ref _interruptStatus) != 0)
            {
                _interruptLine.Raise();
            }
        }
    }

    private void ResetRegisters()
    {
        Volatile.Write(ref _interruptStatus, 0);
        _interruptLine?.Lower();
        Array.Clear(_legacyQueuePfn);
        Array.Fill(_legacyQueueAlign, 4096u);
        _legacyGuestPageSize = 4096;
        _deviceFeaturesSel = 0;
        _driverFeaturesSel = 0;
        _queueSel = 0;
    }

    private void WriteStatus(uint value)
    {
        if (value == 0)
        {
            _device.WriteStatus(DeviceStatus.Reset);
            Volatile.Write(ref _interruptStatus, 0);
            _interruptLine?.Lower();
            Array.Clear(_legacyQueuePfn);
            return;
        }

        DeviceStatus status = (DeviceStatus)(byte)value;
        if (IsLegacy && (status & DeviceStatus.DriverOk) != 0 && (_device.Status & DeviceStatus.FeaturesOk) == 0)
        {
            // Legacy drivers have no FEATURES_OK step: their features are final at DRIVER_OK (or at the first
            // QueuePFN), so the transport takes that step for them.
            _device.WriteStatus(_device.Status | DeviceStatus.FeaturesOk);
        }

        _device.WriteStatus(IsLegacy ? status | (_device.Status & DeviceStatus.FeaturesOk) : status);
    }

    private void WriteLegacyQueuePfn(int index, uint pfn)
    {
        if ((uint)index >= (uint)_legacyQueuePfn.Length || pfn == 0)
        {
            return;
        }

        if ((_device.Status & DeviceStatus.FeaturesOk) == 0)
        {
            _device.WriteStatus(_device.Status | DeviceStatus.FeaturesOk);
        }

        uint align = _legacyQueueAlign[index];
        int size = _device.QueueSize(index);
        if (align == 0 || (align & (align - 1)) != 0 || !SplitQueueLayout.IsValidQueueSize(size))
        {
            Invalid(VirtioMmioRegisters.LegacyQueuePfn, 4, write: true);
            return;
        }

        SplitQueueLayout layout = SplitQueueLayout.Legacy((ulong)pfn * _legacyGuestPageSize, size, align);
        _device.SetQueueDescriptorArea(index, layout.DescriptorTableAddress);
        _device.SetQueueDriverArea(index, layout.DriverAreaAddress);
        _device.SetQueueDeviceArea(index, layout.DeviceAreaAddress);
        _legacyQueuePfn[index] = pfn;
        _device.SetQueueReady(index, true);
    }

    private void SetLow(int index, int area, uint value)
    {
        ulong current = Area(index, area);
        SetArea(index, area, (current & 0xFFFF_FFFF_0000_0000UL) | value);
    }

    private void SetHigh(int index, int area, uint value)
    {
        ulong current = Area(index, area);
        SetArea(index, area, (current & 0xFFFF_FFFFUL) | ((ulong)value << 32));
    }

    private ulong Area(int index, int area)
    {
        VirtqueueAddresses a = _device.QueueAddresses(index);
        return area switch { 0 => a.DescriptorAreaAddress, 1 => a.DriverAreaAddress, _ => a.DeviceAreaAddress };
    }

    private void SetArea(int index, int area, ulong address)
    {
        switch (area)
        {
            case 0: _device.SetQueueDescriptorArea(index, address); break;
            case 1: _device.SetQueueDriverArea(index, address); break;
            default: _device.SetQueueDeviceArea(index, address); break;
        }
    }

    private uint ReadConfig(ulong offset, int size)
    {
        Span<byte> buffer = stackalloc byte[4];
        if (size is not (1 or 2 or 4) || offset > int.MaxValue || _device.ReadConfig((int)offset, buffer[..size]) != size)
        {
            return Invalid(VirtioMmioRegisters.Config + offset, size, write: false);
        }

        return BinaryPrimitives.ReadUInt32LittleEndian(buffer); // the unread high bytes are zero
    }

    private void WriteConfig(ulong offset, int size, uint value)
    {
        if (size is not (1 or 2 or 4) || offset > int.MaxValue || offset + (ulong)size > (ulong)_device.ConfigSize)
        {
            Invalid(VirtioMmioRegisters.Config + offset, size, write: true);
            return;
        }

        Span<byte> buffer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, value);
        _device.WriteConfig((int)offset, buffer[..size]);
    }

    private uint Invalid(ulong offset, int size, bool write)
    {
        Interlocked.Increment(ref _invalidAccesses);
        InvalidAccess?.Invoke(offset, size, write);
        return 0;
    }
}
