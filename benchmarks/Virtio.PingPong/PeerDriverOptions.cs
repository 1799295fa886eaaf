namespace Virtio.PingPong;

/// <summary>The driver side of the cross-process peer: the queue it sets up and the traffic it sends.</summary>
internal sealed record PeerDriverOptions(
    string Ring,
    int QueueSize,
    int Count,
    int OutBytes,
    int InBytes,
    int Segments,
    int? Outstanding,
    int TimeoutSeconds,
    string GpaBase,
    bool Legacy,
    string Features,
    string? File);
