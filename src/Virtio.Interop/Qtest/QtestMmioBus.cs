using Virtio.Ring.Transport.Mmio;

namespace Virtio.Interop.Qtest;

/// <summary>
/// One virtio-mmio transport of a QEMU machine as an <see cref="IVirtioMmioBus"/>: every register access is a
/// qtest read or write at <c>BaseAddress + offset</c>, so <see cref="VirtioMmioDriver"/> (and the drivers built on
/// it) drive QEMU's device exactly as a guest kernel would.
/// </summary>
public sealed class QtestMmioBus : IVirtioMmioBus
{
    private readonly QtestClient _qtest;

    /// <summary>The transport at <paramref name="baseAddress"/> (QEMU's microvm: 0xfeb00000 + i * 0x200).</summary>
    public QtestMmioBus(QtestClient qtest, ulong baseAddress)
    {
        _qtest = qtest;
        BaseAddress = baseAddress;
    }

    /// <summary>The guest physical address of the register window.</summary>
    public ulong BaseAddress { get; }

    /// <inheritdoc/>
    public uint Read(ulong offset, int size) => (uint)_qtest.ReadValue(BaseAddress + offset, size);

    /// <inheritdoc/>
    public void Write(ulong offset, int size, uint value) => _qtest.WriteValue(BaseAddress + offset, size, value);
}
