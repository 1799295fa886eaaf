using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using Virtio.Ring;
using Virtio.Ring.Transport;

namespace Virtio.Balloon.Tests.Hints;

/// <summary>
/// A test device with the balloon's ID and only FREE_PAGE_HINT (Linux numbering: inflate 0, deflate 1, free page 2)
/// that returns hint-queue buffers out of order: it holds every chain it pops and, once it holds
/// <see cref="HoldCount"/>, completes them newest first, so command buffers and arrays come back interleaved and
/// reversed. It records every address of every array (le64) it received, to check the driver's count.
/// </summary>
internal sealed class ReversingHintDevice : VirtioDevice
{
    private readonly GuestMemory _memory;
    private readonly List<(CompletionTicket Ticket, bool IsArray)> _held = [];
    private readonly List<ulong> _addresses = [];

    public ReversingHintDevice(GuestMemory memory, VirtioDeviceOptions options)
        : base(5, 1UL << BalloonFeatureBits.FreePageHint, queueCount: 3, maxQueueSize: 256, configSize: 12, options) => _memory = memory;

    public int HoldCount { get; init; } = 2; // no more than the driver's pool: a device must return buffers eventually

    public int Commands { get; private set; }

    public int Arrays { get; private set; }

    public int OutOfOrderReturns { get; private set; }

    public List<ulong> Addresses
    {
        get
        {
            lock (_addresses)
            {
                return [.. _addresses];
            }
        }
    }

    public void Request(uint id)
    {
        using ConfigChange change = BeginConfigChange();
        BinaryPrimitives.WriteUInt32LittleEndian(change.Config[8..], id);
    }

    protected override GuestMemory Memory => _memory;

    protected override void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData)
    {
        while (queue.TryPop(out DescriptorChain chain))
        {
            if (index != 2)
            {
                queue.PushUsed(chain.Id, 0);
                continue;
            }

            bool isArray = chain.WritableCount > 0;
            if (isArray)
            {
                Arrays++;
                GuestRange range = chain.GetRange(chain.ReadableCount);
                _memory.TryGetSpan(range.Address, (int)range.Length, out Span<byte> array);
                lock (_addresses)
                {
                    for (int at = 0; at + 8 <= array.Length; at += 8)
                    {
                        _addresses.Add(BinaryPrimitives.ReadUInt64LittleEndian(array[at..]));
                    }
                }
            }
            else
            {
                Commands++;
            }

            _held.Add((DeferCompletion(index, chain.Id), isArray));
            if (_held.Count >= HoldCount)
            {
                ReturnHeld();
            }
        }

        if (queue.PublishUsed())
        {
            SignalUsedBuffers(index);
        }
    }

    /// <summary>Completes everything held, newest first.</summary>
    public void ReturnHeld()
    {
        if (_held.Count > 1)
        {
            OutOfOrderReturns++;
        }

        for (int i = _held.Count - 1; i >= 0; i--)
        {
            Complete(_held[i].Ticket, 0);
        }

        _held.Clear();
    }
}
