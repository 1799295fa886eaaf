namespace Virtio.Ring.Transport;

/// <summary>
/// One queue's transport-programmed configuration and, once the driver made it ready, the attached ring.
/// Guarded by the owning <see cref="VirtioDevice"/>'s control lock.
/// </summary>
internal sealed class VirtqueueSlot
{
    public int Size;
    public ulong DescriptorArea;
    public ulong DriverArea;
    public ulong DeviceArea;
    public bool Ready;
    public bool ResetDone;
    public DeviceVirtqueue? Queue;

    public void Clear(int maxSize)
    {
        Queue?.Dispose();
        Queue = null;
        Size = maxSize;
        DescriptorArea = 0;
        DriverArea = 0;
        DeviceArea = 0;
        Ready = false;
        ResetDone = false;
    }
}
