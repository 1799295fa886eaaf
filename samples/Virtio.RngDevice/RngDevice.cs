using System;
using System.Security.Cryptography;
using Virtio.Ring;
using Virtio.Ring.Transport;

namespace Virtio.RngDevice;

// <device>
/// <summary>
/// virtio-rng (VIRTIO 1.2, 5.4 "Entropy Device"): device ID 4, one queue (requestq), no feature bits, no
/// configuration space. The driver offers device-writable buffers; the device fills them with random bytes.
/// </summary>
public sealed class RngDevice(GuestMemory memory, VirtioDeviceOptions? options = null)
    : VirtioDevice(deviceId: 4, deviceFeatures: 0, queueCount: 1, maxQueueSize: 256, configSize: 0, options)
{
    protected override GuestMemory Memory => memory;

    // Runs on the serving thread: a worker woken by the queue's kick eventfd, or the notifying vCPU inline.
    protected override void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData)
    {
        do
        {
            queue.DisableAvailableNotifications();
            while (queue.TryPop(out DescriptorChain chain))       // validated, read once, no allocation
            {
                uint written = 0;
                foreach (Span<byte> buffer in chain.Writable)    // 5.4.6.1: one or more random bytes
                {
                    RandomNumberGenerator.Fill(buffer);
                    written += (uint)buffer.Length;
                }

                queue.PushUsed(chain.Id, written);
            }

            if (queue.PublishUsed())                             // EVENT_IDX / event suppression honoured
            {
                SignalUsedBuffers(index);
            }
        }
        while (queue.EnableAvailableNotifications() == NotificationRecheck.BuffersPending); // no kick is lost
    }
}
// </device>
