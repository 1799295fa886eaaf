namespace Virtio.Ring.Transport.Mmio;

/// <summary>
/// A virtio-mmio register window as the guest sees it: what a VMM's MMIO exit handler forwards, and what the
/// driver side (<see cref="VirtioMmioDriver"/>) talks to. <see cref="VirtioMmioTransport"/> implements it.
/// </summary>
public interface IVirtioMmioBus
{
    /// <summary>Reads <paramref name="size"/> bytes (1, 2 or 4) at <paramref name="offset"/>.</summary>
    uint Read(ulong offset, int size);

    /// <summary>Writes the low <paramref name="size"/> bytes (1, 2 or 4) of <paramref name="value"/> at <paramref name="offset"/>.</summary>
    void Write(ulong offset, int size, uint value);
}
