using System;
using System.Collections.Generic;
using Virtio.Balloon.Hints;

namespace Virtio.Balloon.Tests.Hints;

/// <summary>A sink that keeps every hinted run with its command id, and can run a hook on each batch.</summary>
internal sealed class RecordingHintSink : IFreePageHintSink
{
    private readonly object _lock = new();
    private readonly List<(uint Id, GuestPageRange Range)> _runs = [];

    public Action<int>? OnBatch { get; set; }

    public int Batches { get; private set; }

    public void OnFreePageHints(uint commandId, ReadOnlySpan<GuestPageRange> ranges)
    {
        int batch;
        lock (_lock)
        {
            foreach (GuestPageRange range in ranges)
            {
                _runs.Add((commandId, range));
            }

            batch = Batches++;
        }

        OnBatch?.Invoke(batch);
    }

    public List<GuestPageRange> RunsOf(uint id)
    {
        lock (_lock)
        {
            return _runs.FindAll(r => r.Id == id).ConvertAll(r => r.Range);
        }
    }

    public List<(uint Id, GuestPageRange Range)> All()
    {
        lock (_lock)
        {
            return [.. _runs];
        }
    }
}
