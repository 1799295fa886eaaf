using Virtio.Ring.Packed;

namespace Virtio.Ring.Tests.Packed;

/// <summary>
/// A packed device queue saved with buffers in flight (their IDs and slot counts, 2.8.6, 2.8.21) restores them:
/// the restored device returns them with the right IDs, skipping the right slots. A saved state is checked like
/// guest input: IDs below Q and unique, every buffer at least one slot, slots adding up to the distance between
/// the used and available positions.
/// </summary>
public class PackedInFlightStateTests
{
    private const ulong Buf = PackedForge.BufferBase;

    [Theory]
    [InlineData(VirtqueueFeatures.None)]
    [InlineData(VirtqueueFeatures.InOrder)]
    public void Buffers_in_flight_are_saved_and_returned_after_restore(VirtqueueFeatures features)
    {
        using var forge = new PackedForge(7, features);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, features);
        PackedQueueState state;
        ushort[] held = new ushort[3];
        using (PackedDeviceVirtqueue device = forge.AttachDevice())
        {
            // Three buffers of 1, 2 and 3 descriptors; the device pops all three and returns none.
            for (int n = 1; n <= 3; n++)
            {
                var readable = new GuestRange[n];
                for (int i = 0; i < n; i++)
                {
                    readable[i] = new GuestRange(Buf + ((ulong)i * 64), 8);
                }

                Assert.True(driver.TryAdd(readable, [], n));
            }

            driver.PublishAvailable();
            for (int i = 0; i < 3; i++)
            {
                Assert.True(device.TryPop(out DescriptorChain chain));
                held[i] = chain.Id;
            }

            state = device.SaveState();
        }

        Assert.Equal(3, state.InFlight!.Length);
        Assert.Equal([1, 2, 3], System.Array.ConvertAll(state.InFlight, b => (int)b.Slots));
        Assert.True(PackedDeviceVirtqueue.TryRestore(forge.Memory, state, out PackedDeviceVirtqueue? restored, out QueueError error), error.ToString());
        using (restored)
        {
            Assert.Equal(3, restored.InFlight);
            foreach (ushort id in held)
            {
                restored.PushUsed(id, 0); // in pop order, as IN_ORDER requires
            }

            restored.PublishUsed();
            for (int n = 1; n <= 3; n++)
            {
                Assert.True(driver.TryGetUsed(out int token, out _));
                Assert.Equal(n, token);
            }

            // The ring goes on from the right slot: 6 slots were used, the next list wraps.
            Assert.True(driver.TryAdd([new GuestRange(Buf, 8), new GuestRange(Buf + 64, 8)], [], 9));
            driver.PublishAvailable();
            Assert.True(restored.TryPop(out DescriptorChain next));
            Assert.Equal(2, next.SegmentCount);
        }
    }

    [Fact]
    public void A_forged_in_flight_list_is_refused()
    {
        using var forge = new PackedForge(8);
        // Positions 4 slots apart in the same lap: the buffers must add up to 4 slots.
        var good = new PackedQueueState(forge.Layout, VirtqueueFeatures.None, 4, true, 0, true, true,
            [new PackedInFlightBuffer(0, 1), new PackedInFlightBuffer(5, 3)]);
        Assert.True(PackedDeviceVirtqueue.TryRestore(forge.Memory, good, out PackedDeviceVirtqueue? ok, out _));
        ok!.Dispose();

        Refused(good with { InFlight = [new PackedInFlightBuffer(0, 1), new PackedInFlightBuffer(5, 2)] });  // 3 slots, not 4
        Refused(good with { InFlight = [new PackedInFlightBuffer(0, 1), new PackedInFlightBuffer(0, 3)] });  // ID twice
        Refused(good with { InFlight = [new PackedInFlightBuffer(0, 4), new PackedInFlightBuffer(1, 0)] });  // no slot
        Refused(good with { InFlight = [new PackedInFlightBuffer(8, 4)] });                                 // ID not below Q
        Refused(good with { InFlight = null });                                                             // slots in flight, no buffer
        Refused(good with { NextAvail = 0, AvailWrapCounter = false });                                     // 8 slots apart, buffers cover 4
        Refused(good with { NextUsed = 8 });                                                                // position not below Q

        void Refused(PackedQueueState state)
        {
            Assert.False(PackedDeviceVirtqueue.TryRestore(forge.Memory, state, out _, out QueueError error));
            Assert.Equal(QueueError.InvalidSavedState, error);
        }
    }
}
