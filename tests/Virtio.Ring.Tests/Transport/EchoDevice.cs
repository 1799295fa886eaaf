using System;
using System.Buffers.Binary;
using Virtio.Ring.Transport;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// A small device model for transport tests (device ID 42): queue 0 echoes each chain's readable bytes into its
/// writable bytes. Config space: le32 <c>value</c> (device-written), le32 <c>scratch</c> (driver-writable).
/// </summary>
internal sealed class EchoDevice : VirtioDevice
{
    public const uint Id = 42;
    public const int ConfigBytes = 8;

    private readonly GuestMemory _memory;

    public EchoDevice(GuestMemory memory, ulong deviceFeatures = 0, int queues = 2, int maxQueueSize = 256)
        : base(Id, deviceFeatures, queues, maxQueueSize, ConfigBytes)
    {
        _memory = memory;
        OnReset();
    }

    public int Notifications { get; private set; }

    public uint LastNotificationData { get; private set; }

    public int ResetCount { get; private set; }

    public int Echoed { get; private set; }

    public Func<ulong, bool>? FeatureCheck { get; set; }

    protected override GuestMemory Memory => _memory;

    /// <summary>The device changes its config: new value, generation bump, configuration change notification.</summary>
    public void SetValue(uint value)
    {
        using ConfigChange change = BeginConfigChange();
        BinaryPrimitives.WriteUInt32LittleEndian(change.Config, value);
    }

    protected override void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData)
    {
        Notifications++;
        LastNotificationData = notificationData;
        if (index != 0)
        {
            return;
        }

        Span<byte> scratch = stackalloc byte[256];
        do
        {
            queue.DisableAvailableNotifications();
            while (queue.TryPop(out DescriptorChain chain))
            {
                int n = chain.CopyReadableTo(scratch);
                int written = chain.CopyToWritable(scratch[..n]);
                queue.PushUsed(chain.Id, (uint)written);
                Echoed++;
            }

            if (queue.PublishUsed())
            {
                SignalUsedBuffers(index);
            }
        }
        while (queue.EnableAvailableNotifications() == NotificationRecheck.BuffersPending);
    }

    protected override void OnReset()
    {
        ResetCount++;
        BinaryPrimitives.WriteUInt32LittleEndian(Config, 7);
        BinaryPrimitives.WriteUInt32LittleEndian(Config[4..], 0);
    }

    protected override bool AcceptFeatures(ulong features) => FeatureCheck?.Invoke(features) ?? true;
}
