using Virtio.Ring.Transport.Mmio;

namespace Virtio.RngDevice;

/// <summary>
/// What a VMM's MMIO exit handler does for one virtio-mmio window: forward the guest's access to the device's
/// transport. The in-process guest of this sample reaches the device only through it, and a live update swaps
/// the transport behind it while the guest carries on.
/// </summary>
internal sealed class MmioExitHandler(VirtioMmioTransport transport) : IVirtioMmioBus
{
    public VirtioMmioTransport Transport { get; set; } = transport;

    public uint Read(ulong offset, int size) => Transport.Read(offset, size);

    public void Write(ulong offset, int size, uint value) => Transport.Write(offset, size, value);
}
